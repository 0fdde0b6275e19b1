"""What an embedding is used for on photos: embed a folder, compare two photos, cluster
faces."""

"""Apache Beam pipelines of facenet_tf, each run as `python -m beam_jobs.<name>`."""

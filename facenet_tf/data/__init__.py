"""Data in: record formats, image decoding and preprocessing, P x K batches, pairs files."""

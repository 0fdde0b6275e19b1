"""Beam pipelines of facenet_tf: the configs, build_pipeline functions and DoFns that the
commands in beam_jobs/ and the trainer run, on any Beam runner."""

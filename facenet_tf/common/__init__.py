"""Helpers every floor uses: atomic file writes over tf.io.gfile, progress bars and
log lines, and the run information (git revision, flags, package versions) of every run."""

"""Bottom layer: errors, named random streams, where the packaged data is, units, the run-folder writer, statistics."""

"""Work past one process: shard files joined by `matchlab merge` (`shards`)."""

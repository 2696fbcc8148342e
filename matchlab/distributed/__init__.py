"""Work past one process: shard files joined by `matchlab merge` (`shards`), and executors
that run the stages' models on a cluster (`executors`, `ray_executor`; docs/usage.md, "On a
cluster")."""

"""What runs inside a node: producers fetch, the executor runs, the acker writes outcomes,
the notifier wakes things up, and the leader decides who runs the plugins."""

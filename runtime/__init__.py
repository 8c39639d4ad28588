"""tether.runtime: Ray actors (engine replicas, tool executors, agent programs), router, HTTP server, tracing."""

"""The warm per-node worker (issue 20; ``docs/scaling.md §3``): a long-lived process beside a
SuperNode that keeps the base model and the task data built, serving the node's ClientApp processes
(``client.entry``) over a Unix socket. ``codec`` turns messages into JSON + safetensors frames, ``channel`` is the
ClientApp's side, ``service`` the worker's."""

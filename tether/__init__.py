"""tether: a runtime for agentic LLM workloads.

The subpackages live in the repository's root folders: ``tether.engine``
(``engine/``), ``tether.kernels`` (``kernels/``), ``tether.runtime``,
``tether.agents`` and ``tether.workloads``. This package holds only the CLI.
"""

__version__ = "0.1.0"

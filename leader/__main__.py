"""``python -m leader``: the node agent (``ek8s-node``)."""

import os

# The agent loads no pydantic plugin, so pydantic need not read every installed distribution's
# entry points for one (pydantic/plugin/_loader.py get_plugins, the first time a model is
# built; PYDANTIC_DISABLE_PLUGINS: pydantic PR #8767, ignored by a pydantic without it): ~25 million
# instructions of the boot path with 67 distributions installed (docs/benchmarks.md section 12).
# A value set by the operator stays.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from leader.cli import main  # after the setting above, which the models read when they are built

main()

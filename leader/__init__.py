"""The node agent (``ek8s-node.service``): elect, initialise or join, watch, as a state machine.

Runs on every node; see :mod:`leader.states` for the decisions and :mod:`leader.agent` for
the loop that carries them out.
"""

"""The operator's side, on the Warewulf server: the ``ek8s`` command, ``ek8s status``,
``reset``, ``kubeconfig``, ``bench``, and the Warewulf inventory, plan, apply and overlay build.

Never copied to nodes (``ek8s overlay build`` ships ``core``, ``leader`` and ``phylactery``).
"""

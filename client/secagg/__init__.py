"""The node's side of secure aggregation (SecAgg+): stage handlers the ClientApp routes to.

See :mod:`server.secagg` for the protocol's message flow and :mod:`contract.secagg` for the wire
format and the quantisation error bound.
"""

from client.secagg.handlers import register_secagg, secagg_handlers

__all__ = ["register_secagg", "secagg_handlers"]

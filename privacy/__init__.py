"""Differential privacy for clients (DP-SGD with Opacus on the adapter tensors).

This package is the home of DP-SGD, per the layout in ``shared/design.md``; it may import only
``adapters``. Its engine, config and cross-round accounting arrive with the DP issue; until then
no Corolla code imports it and no run config key enables it.
"""

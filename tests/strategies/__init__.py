"""Tests for strategies/ (mirrors the package tree)."""

"""Composable MLIR text emitters shared by the CPU and GPU lowerings: SSA bookkeeping (`ir`),
weight decoding (`decode`)."""

"""UniLM sequence-to-sequence on the RoFormer stack: the mask (`mask`), the TeaForN loss (`teaforn`),
and cached greedy / beam decoding (`decode`). Pure: nothing runs at import."""

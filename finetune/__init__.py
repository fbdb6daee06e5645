"""Fine-tuning tasks that reuse the encoder and the shared train step (roformer_jax.train).

Empty until the fine-tuning issues land (PET, GlobalPointer, GPLinker, CLUE, UniLM + TeaForN).
"""

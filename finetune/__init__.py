"""Fine-tuning tasks on the library's train loop (roformer_jax.train.loop) and their CLI (finetune/run.py).

A task file holds only what is its own (its data reading and metrics); heads, losses, the loop and
checkpoint loading live in roformer_jax. The Task protocol: roformer_jax/train/task.py.
"""

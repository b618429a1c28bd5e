"""The house every job stands on: content keys and the resumable job store (:mod:`.store`), where tasks
run (:mod:`.workers`: this process, a spawned per-GPU pool, or Ray), which part of the work this array
job takes (:mod:`.shards`), and devices (:mod:`.devices`: device/dtype resolution, :mod:`.gpus`: the GPU
probe, :mod:`.vram`: the VRAM model). Nothing here knows about shots, clips or datasets.
"""

"""Audio features for the networks: Whisper's log-mel (``mel``), the SyncNet mel of wav2lip (``wav2lip_mel``),
syncnet_python's MFCC (``mfcc``) and the Whisper feature windows per video frame (``features``)."""

#: The one rate every network hears its sound at (Hz, mono): Whisper-tiny's input, the SyncNet mel's and the
#: LSE scorer's MFCC (all three official models were trained at 16 kHz). Every model copy of a sound is read at it.
MODEL_AUDIO_RATE = 16_000
#: The video rate the networks were trained and are scored at (fps): LatentSync's training clips and the official
#: SyncNet evaluation are 25 fps CFR; the Whisper windows of other rates are placed by time (``features``).
MODEL_FPS = 25

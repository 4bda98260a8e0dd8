"""Video redaction, one module per stage: ``decode`` (frame-exact range decoding), ``track``
(short-term tracking), ``chunk`` (detect, track, redact, encode one chunk), ``encode`` (chunk
encoding with identical settings) and ``assemble`` (stream-copy join, audio, clean container).
Probing lives in ``infra.video_probe`` (the producer uses it too) and chunk planning in
``producer.chunk_plan``."""

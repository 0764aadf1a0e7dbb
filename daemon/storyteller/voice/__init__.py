"""The voice of the storyteller: sound in and out, and nothing about models or stories.

- tts.py: text to speech. `open_sink(speak=True, wav=None)` speaks sentences through the
  default audio output and/or writes them to one WAV file, in a worker thread, stoppable.

Each module imports its engines (espeak-ng, pyttsx3, ...) only when it is used, so
`import storyteller.voice` costs nothing and needs none of them.
"""

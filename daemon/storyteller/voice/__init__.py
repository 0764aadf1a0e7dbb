"""The voice of the storyteller: sound in and out, and nothing about models or stories.

- tts.py: text to speech. `open_sink(speak=True, wav=None)` speaks sentences through the
  default audio output and/or writes them to one WAV file, in a worker thread, stoppable;
  backends.py chooses between espeak.py and pyttsx3_backend.py, processes.py keeps their
  child processes killable, wavfile.py joins the sentences into one WAV file.
- audio.py: sound in (a PortAudio microphone or a WAV file, the same interface).
- asr.py: speech to words (PocketSphinx or Vosk, restricted to the command grammar);
  commands.py makes that grammar from etc/commands.txt and etc/topics.txt and parses what
  was heard into a command and a listed topic.
- button.py: the GPIO button (libgpiod v2, else sysfs), debounced.

Each module imports its engines (espeak-ng, pyttsx3, ...) only when it is used, so
`import storyteller.voice` costs nothing and needs none of them.
"""

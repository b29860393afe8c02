import os

os.environ.setdefault("RETINA_NO_PROGRESS", "1")

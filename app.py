"""WEMoE Explorer: `python app.py` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose the address)."""
import logging

from app.ui import build_demo, launch_options

demo = build_demo()
if __name__ == "__main__":
    # The app's own events (jobs starting, ending, failing; refused inputs that look like bugs)
    # go to stderr with a time stamp; other libraries stay at warnings.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("app").setLevel(logging.INFO)
    demo.launch(**launch_options())

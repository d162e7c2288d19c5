"""WEMoE Explorer: `python app.py` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose the address)."""
from app.ui import build_demo, launch_options

demo = build_demo()
if __name__ == "__main__":
    demo.launch(**launch_options())

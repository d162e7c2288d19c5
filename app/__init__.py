"""WEMoE Explorer, the Gradio app: ``build_demo()`` in ``app.ui``; logic below it in
``callbacks``, ``explore``, ``learn``, ``api``, ``jobs``, ``runs``, ``sessions``; figures in
``figures``. The app talks to ``wemoe_core`` only through its public functions."""

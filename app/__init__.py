"""WEMoE Explorer, the Gradio app: ``build_demo()`` in ``app.ui``; logic below it in
``callbacks``, ``explore``, ``learn``, ``api``, ``jobs``, ``runs``, ``sessions``; the controls in
``controls`` (generated from the registry); figures in ``figures``; the server's doors in
``confine`` (which local files a visitor's pool may name) and ``messages`` (what a visitor may
read). The app talks to ``wemoe_core`` only through its public functions."""

"""The page: ``build_demo()`` lays out the six tabs and wires them to the callbacks. Layout only:
every decision lives in ``callbacks``, ``explore``, ``learn`` and ``api``."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr

from wemoe_core.merging.registry import METHODS
from wemoe_core.pools import load_pool

from . import api, callbacks, controls, explore, learn, views
from .config import default_pool, limits, warm_up

log = logging.getLogger(__name__)
PRIVATE = dict(api_visibility="private")
DEFAULT_METHOD = "wemoe"
INTRO = ("Merge fine-tuned vision transformers and look inside the merge. **1** pick a pool and tasks, "
         "**2** merge or adapt (TA, TIES, AdaMerging, WEMoE), **3** ask the models about an image and watch "
         "WEMoE's router, **4** compare, **5** learn why, **6** export.")
CSS = views.CSS + """
#wm-header {margin-bottom: 0;} .wm-small {font-size: 12px; color: #666;}
.wm-heading {margin: 6px 0 -4px 2px;}
"""


def launch_options() -> dict:
    """Keyword arguments of ``demo.launch()`` that come from our configuration."""
    # show_error: our callbacks answer every failure with a gr.Error of their own (see api.guarded), so
    # what this adds is Gradio's own messages about inputs it refused before calling us (a text
    # where a number belongs, a file that was not uploaded): their text, never a traceback.
    # state_session_capacity: Gradio keeps a copy of the page's component settings for every
    # connection it has seen (~150 kB here), 10,000 of them by default; twice our own cap on
    # visitors (WEMOE_MAX_SESSIONS) bounds that memory without dropping anyone we still keep.
    lim = limits()
    return dict(css=CSS, max_file_size=f"{lim.max_upload_mb}mb", show_error=True,
                state_session_capacity=max(100, 2 * lim.max_sessions))


def _models_tab(c: SimpleNamespace, pool) -> None:
    with gr.Tab("1 · Models", id="models"):
        gr.Markdown("Choose a **pool** (one pre-trained model and one fine-tuned copy per task) and the tasks to merge.")
        with gr.Row():
            c.pool_dd = gr.Dropdown(choices=[(pool.info.title, pool.name)], value=pool.name, label="pool", scale=1)
            c.pools_md = gr.Markdown("Checking which pools can be used here…", elem_classes="wm-small")
        c.tasks_cb = gr.CheckboxGroup(choices=[(t.title, t.name) for t in pool.info.tasks], value=pool.tasks,
                                      label="tasks to merge (2 or more)")
        c.models_md = gr.Markdown(f"{pool.info.title}: {pool.info.description}")
        c.tasks_df = gr.Dataframe(callbacks.task_table(pool), label="the fine-tuned models", interactive=False, wrap=True)


def _merge_tab(c: SimpleNamespace, pool) -> None:
    with gr.Tab("2 · Merge & adapt", id="merge"):
        with gr.Row():
            with gr.Column(scale=2):
                c.method = gr.Radio([(m.pretty_name, m.name) for m in METHODS.values()], value=DEFAULT_METHOD, label="method")
                c.preset = gr.Radio([("recommended for this pool", "recipe"), ("paper defaults", "paper")],
                                    value="recipe", label="starting values")
                c.method_md = gr.Markdown()
                _settings(c, pool)
                with gr.Row():
                    c.run_btn = gr.Button("Run", variant="primary", elem_id="wm-run")
                    c.stop_btn = gr.Button("Stop", variant="stop", elem_id="wm-stop")
            with gr.Column(scale=3):
                c.progress = gr.HTML(views.progress(0, "idle"), elem_id="wm-progress")
                c.job_md = gr.Markdown("Jobs run in the background; the rest of the page stays usable.")
                c.entropy_plot = gr.Plot(label="entropy per task", elem_id="wm-entropy")
                c.routing_plot = gr.Plot(label="routing / coefficients", elem_id="wm-routing")
        c.timer = gr.Timer(0.5, active=False)


def _settings(c: SimpleNamespace, pool) -> None:
    """The method's controls, generated from the registry (see ``controls``): its main settings
    up front, the rest in a closed accordion; only those that apply are shown."""
    values = {}
    for name in [*reversed(METHODS), DEFAULT_METHOD]:       # the page opens on the default method
        values |= controls.preset_values(pool, name, "recipe", limits().max_steps)
    values = {(g, s.name): values.get((g, s.name), s.default) for g, s in controls.LAYOUT}
    shown = controls.applicable(DEFAULT_METHOD, values)

    def make(i: int):
        g, spec = controls.LAYOUT[i]
        return controls.component(spec, values[g, spec.name], limits().max_steps, visible=shown[i], group=g)

    c.controls, c.headings = [make(i) for i in range(controls.N_MAIN)], []
    heads = dict(zip(controls.ADVANCED_GROUPS, controls.headings_shown(DEFAULT_METHOD, values)))
    with gr.Accordion(controls.advanced_title(pool, DEFAULT_METHOD, values), open=False, elem_id="wm-advanced",
                      visible=controls.has_advanced(DEFAULT_METHOD, values)) as c.advanced:
        for i in range(controls.N_MAIN, len(controls.LAYOUT)):
            g = controls.LAYOUT[i][0]
            if len(c.headings) < len(controls.ADVANCED_GROUPS) and g == controls.ADVANCED_GROUPS[len(c.headings)]:
                c.headings.append(gr.Markdown(controls.HEADINGS[g], visible=heads[g], elem_classes="wm-heading"))
            c.controls.append(make(i))


def _explore_tab(c: SimpleNamespace) -> None:
    with gr.Tab("3 · Explore", id="explore"):
        c.gallery = gr.Gallery(label="pick an example (two per task), or upload your own image", columns=16, rows=1,
                               height=150, allow_preview=False, object_fit="contain", elem_id="wm-gallery")
        with gr.Row():
            c.image_view = gr.Image(label="image", interactive=False, height=230, scale=1)
            c.upload = gr.File(label="upload an image", file_types=["image"], type="filepath", height=230, scale=1)
            with gr.Column(scale=3):
                c.explore_models = gr.CheckboxGroup(label="models side by side (up to 4; none: task arithmetic)")
                with gr.Row():
                    c.route_model = gr.Dropdown(label="WEMoE whose router to show", choices=[])
                    c.layer_dd = gr.Dropdown(label="routed module (overlay)", choices=[])
                    c.expert_dd = gr.Dropdown(label="overlay shows", choices=[("strongest expert (colours)", explore.ARGMAX)],
                                              value=explore.ARGMAX)
                c.predict_btn = gr.Button("Predict", variant="primary")
                c.explore_md = gr.Markdown("Upload an image or pick an example.")
        c.preds = gr.HTML(label="predictions", elem_id="wm-preds")
        with gr.Row():
            c.heatmap = gr.Plot(label="routing heatmap", elem_id="wm-heatmap")
            c.overlay = gr.Plot(label="router weights per patch", elem_id="wm-overlay")


def _compare_tab(c: SimpleNamespace) -> None:
    with gr.Tab("4 · Compare", id="compare"):
        c.compare_df = gr.Dataframe(label="every model of this session", interactive=False, elem_id="wm-compare")
        c.compare_plot = gr.Plot(elem_id="wm-compare-plot")
        c.share_model = gr.Dropdown(label="routing analysis of", choices=[])
        c.share_plot = gr.Plot(elem_id="wm-share")


def _learn_tab(c: SimpleNamespace) -> None:
    with gr.Tab("5 · Learn", id="learn") as c.learn_tab:
        c.learn_status = gr.Markdown("The figures are measured when you open this tab.", elem_id="wm-learn-status")
        c.learn_plots = []
        for text, fig in learn.sections():
            gr.Markdown(text, latex_delimiters=[])
            if fig:
                c.learn_plots.append(gr.Plot(label=fig, elem_id=f"wm-learn-{fig}"))


def _export_tab(c: SimpleNamespace) -> None:
    with gr.Tab("6 · Export", id="export"):
        gr.Markdown("Download a model as **safetensors** (its recipe is in the file's metadata), WEMoE's "
                    "**router-only** checkpoint, the **recipe** as JSON, and this session's **results** as CSV.")
        with gr.Row():
            c.export_model = gr.Dropdown(label="model", choices=[])
            c.export_btn = gr.Button("Prepare files", variant="primary")
        c.export_md = gr.Markdown()
        c.export_files = gr.File(label="files", file_count="multiple", interactive=False, elem_id="wm-export-files")


def _api(c: SimpleNamespace) -> None:
    """Hidden components that give the API endpoints their inputs and outputs."""
    with gr.Row(visible=False):
        # topk is any JSON value, so a wrong one ("abc") reaches predict's own check and its message
        # rather than Gradio's conversion error (which names Python types and exceptions)
        image, model, topk = gr.File(type="filepath"), gr.Textbox(""), gr.JSON("5")
        out, files, go, go2 = gr.JSON(), gr.File(file_count="multiple"), gr.Button(), gr.Button()
    go.click(api.predict, [image, model, topk], out, api_name="predict", concurrency_id="explain", concurrency_limit=4)
    go2.click(api.export, [model], files, api_name="export")
    gr.api(api.merge, api_name="merge", concurrency_limit=None)


def _safe(fn):
    return api.guarded(f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}")(fn)


def _wire(c: SimpleNamespace, demo: gr.Blocks) -> None:
    """Every callback runs through ``_safe``: a failure nobody foresaw becomes a short message
    on the page (and a traceback in the server log), never a traceback in the browser."""
    views_out = [getattr(c, n) for n in callbacks.VIEW_OUTPUTS]
    demo.load(_safe(callbacks.resume), [c.sid], [c.sid, c.timer, c.job_md, *views_out], **PRIVATE)
    demo.load(_safe(callbacks.pools_status), None, [c.pool_dd, c.pools_md], **PRIVATE)
    demo.load(_safe(explore.gallery), [c.sid], [c.gallery], **PRIVATE)
    method_out = [c.method_md, c.preset, c.advanced, *c.headings, *c.controls]
    c.pool_dd.input(_safe(callbacks.select_pool), [c.sid, c.pool_dd], [c.pool_dd, c.tasks_cb, c.tasks_df, c.models_md], **PRIVATE
                    ).then(_safe(explore.gallery), [c.sid], [c.gallery], **PRIVATE
                           ).then(_safe(callbacks.show_method), [c.method, c.pool_dd, c.preset], method_out, **PRIVATE)
    c.tasks_cb.input(_safe(callbacks.select_tasks), [c.sid, c.tasks_cb], [c.models_md], **PRIVATE)
    for trigger in (c.method.input, c.preset.input):
        trigger(_safe(callbacks.show_method), [c.method, c.pool_dd, c.preset], method_out, **PRIVATE)
    conditions = {s.when[0] for _, s in controls.LAYOUT if s.when}
    for i, (g, spec) in enumerate(controls.LAYOUT):          # what applies, and the accordion's title
        if i >= controls.N_MAIN or spec.name in conditions:
            c.controls[i].input(_safe(callbacks.refresh_controls), [c.method, c.pool_dd, *c.controls],
                                [c.advanced, *c.headings, *c.controls], show_progress="hidden", queue=False, **PRIVATE)
    demo.load(_safe(callbacks.show_method), [c.method, c.pool_dd, c.preset], method_out, **PRIVATE
              ).then(_safe(warm_up), None, None, **PRIVATE)     # the page first, then the slow import
    c.run_btn.click(_safe(callbacks.start), [c.sid, c.pool_dd, c.tasks_cb, c.method, *c.controls],
                    [c.job_md, c.progress, c.timer, c.seen, c.entropy_plot, c.routing_plot], concurrency_limit=None,
                    show_progress="hidden", **PRIVATE)
    c.stop_btn.click(_safe(callbacks.stop), [c.sid], [c.job_md], concurrency_limit=None, **PRIVATE)
    c.timer.tick(_safe(callbacks.poll), [c.sid, c.seen], [c.progress, c.job_md, c.entropy_plot, c.routing_plot, c.timer, c.seen,
                                                  *views_out], show_progress="hidden", concurrency_limit=None, **PRIVATE)
    ask = dict(fn=_safe(explore.predict), inputs=[c.sid, c.explore_models, c.route_model, c.layer_dd, c.expert_dd],
               outputs=[c.preds, c.heatmap, c.overlay, c.layer_dd, c.expert_dd, c.explore_md],
               concurrency_id="explain", concurrency_limit=4, **PRIVATE)
    c.upload.upload(_safe(explore.use_upload), [c.sid, c.upload], [c.image_view, c.explore_md], **PRIVATE).then(**ask)
    c.gallery.select(_safe(explore.use_example), [c.sid], [c.image_view, c.explore_md], **PRIVATE).then(**ask)
    for trigger in (c.predict_btn.click, c.explore_models.input, c.route_model.input):
        trigger(**ask)
    for trigger in (c.layer_dd.input, c.expert_dd.input):
        trigger(_safe(explore.redraw_overlay), [c.sid, c.route_model, c.layer_dd, c.expert_dd], [c.overlay], **PRIVATE)
    c.share_model.input(_safe(callbacks.share_figure), [c.sid, c.share_model], [c.share_plot], **PRIVATE)
    c.export_btn.click(_safe(callbacks.export), [c.sid, c.export_model], [c.export_files, c.export_md], **PRIVATE)
    c.learn_tab.select(_safe(learn.figures_for), [c.sid], [c.learn_status, *c.learn_plots], **PRIVATE)


def build_demo() -> gr.Blocks:
    """The whole app. Cheap: no model is built until a visitor asks for one, and torch is not even
    imported (the first page load starts that in the background: ``config.warm_up``)."""
    pool = load_pool(default_pool())
    c = SimpleNamespace()
    ttl = limits().files_ttl_s          # Gradio deletes uploads and served files this old, checking
    with gr.Blocks(title="WEMoE Explorer", delete_cache=(min(3600, ttl), ttl)) as demo:    # hourly at most
        c.sid = gr.BrowserState(None, storage_key="wemoe-explorer-session")
        c.seen = gr.State(-1)
        gr.Markdown(f"# WEMoE Explorer\n{INTRO}", elem_id="wm-header")
        with gr.Tabs():
            _models_tab(c, pool)
            _merge_tab(c, pool)
            _explore_tab(c)
            _compare_tab(c)
            _learn_tab(c)
            _export_tab(c)
        _api(c)
        _wire(c, demo)
    demo.queue(default_concurrency_limit=2, max_size=limits().queue_size)
    return demo

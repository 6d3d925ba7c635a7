"""The demo's browser-side assets: keyboard and mouse shortcuts (JavaScript) and styles (CSS).

The shortcuts work on the tab shown, the image tab or the video tab (`TABS`: their ids differ by
a prefix). The script talks to a tab only through its own components: a shortcut that has a
button presses that button (so a disabled button stays inert), and the actions that have none
(a click or right-click on the canvas, a dragged box, Esc, and Delete) write a
small JSON command into the tab's hidden textbox (e.g. `#image_command`) and press its hidden
button (`#image_command_button`); the tab's handler reads it and calls the service. Clicks are
mapped to the picture's pixels here, for both canvases. `SHORTCUTS` is the one list the help
panel shows.
"""
from __future__ import annotations

import html
import json

# (keys, what they do), in the order the help panel lists them.
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("P", "click mode: positive click (add to the object)"),
    ("N", "click mode: negative click (remove from the object)"),
    ("B", "click mode: box (two clicks, or drag)"),
    ("Right-click", "a negative click, whatever the mode"),
    ("Drag on the image or frame", "draw a box for the selected object (in any mode)"),
    ("Esc", "cancel a half-drawn box"),
    ("Ctrl+Z", "undo"),
    ("Ctrl+Shift+Z or Ctrl+Y", "redo"),
    ("Shift+N", "new object (N alone is the negative-click mode)"),
    ("Delete or Backspace", "delete the selected object"),
)

# The tabs the script drives: the prefix of their buttons' ids, the canvas's id, the hidden
# command textbox's id (its button: the same + "_button", its row: + "_row"). The Delete key
# sends a command, not the tab's Delete button (disabled with nothing selected): the tab says why.
TABS: tuple[dict, ...] = (
    {"prefix": "", "canvas": "image_canvas", "command": "image_command"},
    {"prefix": "video_", "canvas": "video_frame", "command": "video_command"},
)

# A drag shorter than this (screen pixels) is a click, not a box.
DRAG_THRESHOLD_PX = 6


def shortcuts_markdown() -> str:
    """The shortcuts as a Markdown table, for the help panel."""
    rows = "\n".join(f"| {html.escape(keys)} | {html.escape(what)} |" for keys, what in SHORTCUTS)
    return ("Shortcuts work while the cursor is not in a text field.\n\n"
            "| key or mouse | action |\n|---|---|\n" + rows)


CSS = """
/* The canvas: as large as the column allows, never distorted (the picture keeps its aspect
   ratio; the element is as wide and tall as the picture it shows). */
#image_canvas .upload-container, #image_canvas .image-frame { width: 100% !important; }
#image_canvas .image-frame { display: flex; align-items: center; justify-content: center; }
#image_canvas img { object-fit: contain; width: 100% !important; height: auto !important; max-height: 100% !important;
                    cursor: crosshair; user-select: none; -webkit-user-drag: none; }
#video_frame img { cursor: crosshair; user-select: none; -webkit-user-drag: none; }
#segapp_box_band { position: fixed; border: 2px dashed #ffd400; background: rgba(255, 212, 0, 0.12);
                   pointer-events: none; z-index: 1000; display: none; }
"""
# The tabs' command channels are hidden.
CSS += ", ".join(f"#{tab['command']}_row" for tab in TABS) + " { display: none !important; }\n"

_SCRIPT = r"""
(() => {
  if (window.segappShortcuts) return;
  const DRAG = %(drag)d;
  // Each tab's canvas: {prefix of its ids, canvas id, command box id (its button: + "_button")}.
  const TABS = %(tabs)s;
  const q = (sel) => document.querySelector(sel);
  const shown = (sel) => { const c = q(sel); return c && c.offsetParent !== null; };
  // The tab whose canvas picture is el (null: el is no canvas's picture).
  const tabOf = (el) => TABS.find((t) => el && el === q('#' + t.canvas + ' img')) || null;

  function send(tab, command) {
    const box = q(`#${tab.command} textarea, #${tab.command} input`);
    const button = q('#' + tab.command + '_button');
    if (!box || !button) return;
    command.nonce = Date.now() + Math.random();  // a repeated command is still a change
    box.value = JSON.stringify(command);
    box.dispatchEvent(new Event('input', {bubbles: true}));
    setTimeout(() => button.click(), 0);
  }
  // A point on the page -> pixel of the picture shown in img (which object-fit may letterbox).
  function pixel(img, clientX, clientY) {
    const r = img.getBoundingClientRect();
    const nw = img.naturalWidth, nh = img.naturalHeight;
    const fit = getComputedStyle(img).objectFit;
    let sx = r.width / nw, sy = r.height / nh;
    if (fit !== 'fill') {
      let s = Math.min(sx, sy);
      if (fit === 'none') s = 1; else if (fit === 'scale-down') s = Math.min(s, 1);
      sx = sy = s;
    }
    const ox = (r.width - nw * sx) / 2, oy = (r.height - nh * sy) / 2;
    const x = Math.floor((clientX - r.left - ox) / sx), y = Math.floor((clientY - r.top - oy) / sy);
    return [Math.min(Math.max(x, 0), nw - 1), Math.min(Math.max(y, 0), nh - 1)];
  }

  let start = null, dragging = false, swallowClick = false;
  const band = () => {
    let b = q('#segapp_box_band');
    if (!b) { b = document.createElement('div'); b.id = 'segapp_box_band'; document.body.appendChild(b); }
    return b;
  };
  const hideBand = () => { const b = q('#segapp_box_band'); if (b) b.style.display = 'none'; };

  document.addEventListener('mousedown', (e) => {
    const tab = tabOf(e.target);
    if (e.button !== 0 || !tab) return;
    e.preventDefault();  // no native image drag
    start = {x: e.clientX, y: e.clientY, img: e.target, tab};
    dragging = false;
  }, true);
  document.addEventListener('mousemove', (e) => {
    if (!start) return;
    if (!dragging && Math.hypot(e.clientX - start.x, e.clientY - start.y) < DRAG) return;
    dragging = true;
    const b = band();
    Object.assign(b.style, {display: 'block', left: Math.min(e.clientX, start.x) + 'px',
      top: Math.min(e.clientY, start.y) + 'px', width: Math.abs(e.clientX - start.x) + 'px',
      height: Math.abs(e.clientY - start.y) + 'px'});
  }, true);
  document.addEventListener('mouseup', (e) => {
    if (!start) return;
    const s = start; start = null;
    hideBand();
    if (!dragging) return;
    dragging = false;
    swallowClick = true;  // the click that ends a drag is not a click on the picture
    setTimeout(() => { swallowClick = false; }, 300);
    const [x0, y0] = pixel(s.img, s.x, s.y), [x1, y1] = pixel(s.img, e.clientX, e.clientY);
    send(s.tab, {op: 'box', box: [x0, y0, x1, y1]});
  }, true);
  window.addEventListener('click', (e) => {
    if (swallowClick) { swallowClick = false; e.stopImmediatePropagation(); e.preventDefault(); return; }
    const tab = tabOf(e.target);
    if (!tab || e.button !== 0) return;
    // Gradio's select maps clicks as if the picture were never scaled up: map it here instead.
    e.stopImmediatePropagation();
    e.preventDefault();
    const [x, y] = pixel(e.target, e.clientX, e.clientY);
    send(tab, {op: 'click', x, y});
  }, true);
  document.addEventListener('contextmenu', (e) => {
    const tab = tabOf(e.target);
    if (!tab) return;
    e.preventDefault();
    const [x, y] = pixel(e.target, e.clientX, e.clientY);
    send(tab, {op: 'click', mode: 'negative', x, y});
  }, true);

  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const typing = t && (t.isContentEditable || ['TEXTAREA', 'SELECT'].includes(t.tagName)
      || (t.tagName === 'INPUT' && !['checkbox', 'radio', 'range', 'button'].includes(t.type)));
    if (typing) return;  // keys typed into a text field are text
    const tab = TABS.find((c) => shown('#' + c.canvas));  // the tab shown
    if (!tab || e.altKey) return;
    const key = e.key.toLowerCase(), ctrl = e.ctrlKey || e.metaKey;
    const press = (id) => { const b = q('#' + tab.prefix + id); if (b) b.click(); e.preventDefault(); };
    const mode = (value) => {
      const r = q(`#${tab.prefix}click_mode input[value="${value}"]`);
      if (r) r.click();
      e.preventDefault();
    };
    if (ctrl && key === 'z') return press(e.shiftKey ? 'redo_button' : 'undo_button');
    if (ctrl && key === 'y') return press('redo_button');
    if (ctrl) return;
    if (key === 'n' && e.shiftKey) return press('new_object_button');
    if (e.shiftKey) return;
    if (key === 'p') return mode('positive');
    if (key === 'n') return mode('negative');
    if (key === 'b') return mode('box');
    if (key === 'delete' || key === 'backspace') {
      // A command, not the Delete button (disabled with nothing selected): the tab says why.
      e.preventDefault();
      return send(tab, {op: 'delete'});
    }
    if (key === 'escape') {
      if (start) { start = null; dragging = false; hideBand(); }
      return send(tab, {op: 'cancel_box'});
    }
  });
  window.segappShortcuts = true;
})();
"""

# For launch(head=...): runs once when the page loads; listeners are delegated, so the
# components may render later.
HEAD = "<script>" + _SCRIPT % {"drag": DRAG_THRESHOLD_PX, "tabs": json.dumps(TABS)} + "</script>"

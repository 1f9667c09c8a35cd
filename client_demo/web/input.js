// Input devices -> intent: keyboard and mouse, or a virtual stick and a fire button on
// touch screens. `Controls.sample(me, toWorld)` is read once per client tick and returns
// {moveX, moveY, aim, fire}; nothing here knows about the network.
//
// Touch: the stick is a Pointer Events target (so a mouse can drive it too, which is how
// the browser tests and desktop touch screens both work). The move is the thumb's offset
// from the stick's centre divided by its radius, clamped to length 1; with no mouse, the
// aim follows the last non-zero move, so the fire button shoots where the player walks.

/** Whether to show touch controls: a coarse primary pointer, or touch with no fine pointer. */
export function isTouchDevice(win = window) {
  const mm = (q) => !!win.matchMedia?.(q).matches;
  return mm("(pointer: coarse)") || ((win.navigator?.maxTouchPoints || 0) > 0 && !mm("(pointer: fine)"));
}

/** The stick's move for a thumb at (dx, dy) from its centre, radius `r` (pure). */
export function stickVector(dx, dy, r) {
  if (!(r > 0)) return { x: 0, y: 0 };
  let x = dx / r, y = dy / r;
  const len = Math.hypot(x, y);
  if (len < 0.15) return { x: 0, y: 0 }; // dead zone: a resting thumb does not drift
  if (len > 1) {
    x /= len;
    y /= len;
  }
  return { x, y };
}

const KEYS = {
  KeyW: "up", ArrowUp: "up", KeyS: "down", ArrowDown: "down",
  KeyA: "left", ArrowLeft: "left", KeyD: "right", ArrowRight: "right", Space: "fire",
};
const BY_KEY = { w: "up", s: "down", a: "left", d: "right", " ": "fire" };

export class Controls {
  /** @param {{canvas, stick?, fire?, onToggleHud?: () => void}} els */
  constructor(els) {
    this.canvas = els.canvas;
    this.onToggleHud = els.onToggleHud || (() => {});
    this.keys = new Set();
    this.mouse = { sx: null, sy: null, down: false };
    this.stick = { x: 0, y: 0, pointer: null };
    this.fireHeld = false;
    this.aim = 0;
    this._bindKeyboard();
    this._bindMouse();
    if (els.stick) this._bindStick(els.stick);
    if (els.fire) this._bindFire(els.fire);
  }

  /** Intent for this tick. `me` {x, y} (our position) and `toWorld(sx, sy)` aim the mouse. */
  sample(me, toWorld) {
    let mx = 0, my = 0;
    const k = this.keys;
    if (k.has("left")) mx -= 1;
    if (k.has("right")) mx += 1;
    if (k.has("up")) my -= 1;
    if (k.has("down")) my += 1;
    if (this.stick.pointer !== null) {
      mx += this.stick.x;
      my += this.stick.y;
    }
    if (me && this.mouse.sx !== null) {
      const w = toWorld(this.mouse.sx, this.mouse.sy);
      if (w.x !== me.x || w.y !== me.y) this.aim = Math.atan2(w.y - me.y, w.x - me.x);
    } else if (mx !== 0 || my !== 0) {
      this.aim = Math.atan2(my, mx);
    }
    return { moveX: mx, moveY: my, aim: this.aim, fire: this.mouse.down || this.fireHeld || k.has("fire") };
  }

  _bindKeyboard() {
    const action = (e) => KEYS[e.code] || BY_KEY[(e.key || "").toLowerCase()];
    window.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLInputElement) return; // typing a name
      if (e.code === "KeyH" || e.code === "F3" || (!e.code && e.key?.toLowerCase() === "h")) {
        if (!e.repeat) this.onToggleHud();
        e.preventDefault();
        return;
      }
      const a = action(e);
      if (a) {
        this.keys.add(a);
        e.preventDefault();
      }
    });
    window.addEventListener("keyup", (e) => {
      const a = action(e);
      if (a) this.keys.delete(a);
    });
    window.addEventListener("blur", () => this.release());
  }

  release() {
    this.keys.clear();
    this.mouse.down = false;
    this.fireHeld = false;
    this.stick = { x: 0, y: 0, pointer: null };
  }

  _bindMouse() {
    const c = this.canvas;
    c.addEventListener("mousemove", (e) => {
      this.mouse.sx = e.offsetX;
      this.mouse.sy = e.offsetY;
    });
    c.addEventListener("mousedown", (e) => {
      if (e.button === 0) this.mouse.down = true;
      this.mouse.sx = e.offsetX;
      this.mouse.sy = e.offsetY;
    });
    window.addEventListener("mouseup", (e) => {
      if (e.button === 0) this.mouse.down = false;
    });
    c.addEventListener("contextmenu", (e) => e.preventDefault());
  }

  _bindStick(el) {
    const knob = el.querySelector(".knob");
    const move = (e) => {
      const r = el.getBoundingClientRect();
      const radius = r.width / 2;
      const v = stickVector(e.clientX - (r.left + radius), e.clientY - (r.top + r.height / 2), radius);
      this.stick.x = v.x;
      this.stick.y = v.y;
      if (knob) knob.style.transform = `translate(${v.x * radius * 0.6}px, ${v.y * radius * 0.6}px)`;
    };
    el.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      el.setPointerCapture?.(e.pointerId);
      this.stick.pointer = e.pointerId;
      this.mouse.sx = null; // a touch player aims where they walk
      move(e);
    });
    el.addEventListener("pointermove", (e) => {
      if (e.pointerId === this.stick.pointer) move(e);
    });
    const end = (e) => {
      if (e.pointerId !== this.stick.pointer) return;
      this.stick = { x: 0, y: 0, pointer: null };
      if (knob) knob.style.transform = "";
    };
    el.addEventListener("pointerup", end);
    el.addEventListener("pointercancel", end);
  }

  _bindFire(el) {
    el.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      el.setPointerCapture?.(e.pointerId);
      this.fireHeld = true;
      el.classList.add("held");
    });
    const end = () => {
      this.fireHeld = false;
      el.classList.remove("held");
    };
    el.addEventListener("pointerup", end);
    el.addEventListener("pointercancel", end);
  }
}

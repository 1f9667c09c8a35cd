// Where the camera looks: the whole world when it fits on screen, else our player, with the
// view clamped at the world's edges (a strip beyond the walls stays visible).
//
// Theory of operation
// -------------------
// `cameraTarget` is a pure function of the canvas size, the world and the focus: the
// scale is the larger of "fit the whole world" and "about 760 units across the short
// side" (never more than 2x), so today's 1000 x 1000 arena is drawn exactly as before;
// on each axis where the view covers the world (plus its margin) the camera is centred
// and never moves.
//
// `CameraFollow` eases the camera toward that target: an exponential approach with time
// constant FOLLOW_TAU_S, so the view never jumps (a respawn across a big world glides over
// a few hundred ms) and a moving player is followed without the jitter of a hard lock.
// A jump larger than SNAP_UNITS (a new session, a teleport across the world) snaps, since
// gliding over thousands of units would smear the whole screen. Axes that fit are not
// eased (they do not move). Pure: Node tests drive it with explicit time steps.

export const FOLLOW_TAU_S = 0.08;
export const SNAP_UNITS = 3000;
const MARGIN_PX = 24;
const COMFORT_UNITS = 760; // about this many units across the canvas's short side
const WALL_PAD_PX = 40; // screen pixels shown beyond a wall when the camera is clamped

/**
 * The camera a frame wants: {x, y, scale, fitsX, fitsY} for a canvas of cw x ch CSS
 * pixels, `world` {w, h} and `focus` {x, y} (null: the world's centre).
 */
export function cameraTarget(cw, ch, world, focus) {
  const fit = Math.min((cw - 2 * MARGIN_PX) / world.w, (ch - 2 * MARGIN_PX) / world.h);
  const comfortable = Math.min(cw, ch) / COMFORT_UNITS;
  const scale = Math.max(fit, Math.min(comfortable, 2));
  const halfW = cw / 2 / scale, halfH = ch / 2 / scale;
  const fx = focus ? focus.x : world.w / 2, fy = focus ? focus.y : world.h / 2;
  const pad = WALL_PAD_PX / scale;
  const fitsX = 2 * halfW >= world.w + 2 * pad, fitsY = 2 * halfH >= world.h + 2 * pad;
  const clampAxis = (v, half, size, fits) =>
    fits ? size / 2 : Math.min(Math.max(v, half - pad), size + pad - half);
  return { x: clampAxis(fx, halfW, world.w, fitsX), y: clampAxis(fy, halfH, world.h, fitsY),
           scale, fitsX, fitsY };
}

/** The eased camera: `step(target, dtS)` returns the camera to draw with this frame. */
export class CameraFollow {
  constructor(tauS = FOLLOW_TAU_S) {
    this.tauS = tauS;
    this.cam = null;
  }

  reset() {
    this.cam = null;
  }

  step(target, dtS) {
    const c = this.cam;
    if (!c || c.scale !== target.scale
        || Math.hypot(target.x - c.x, target.y - c.y) > SNAP_UNITS) {
      this.cam = { x: target.x, y: target.y, scale: target.scale };
      return this.cam;
    }
    const k = 1 - Math.exp(-Math.max(0, dtS) / this.tauS);
    this.cam = {
      x: target.fitsX ? target.x : c.x + (target.x - c.x) * k,
      y: target.fitsY ? target.y : c.y + (target.y - c.y) * k,
      scale: target.scale,
    };
    return this.cam;
  }
}

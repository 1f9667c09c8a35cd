// The Tickwire demo client's entry point: load the protobuf types, make the Game, and let
// the Lobby (lobby.js: start screen, quick play, private rooms, join by link) start it.
// The parts (see game.js's theory of operation): game.js (session and client tick),
// net.js (socket, reconnect), status.js / connview.js (what a close means, what the player
// sees about it), input.js (keyboard, mouse, touch), view.js / render.js / hud.js
// (drawing), predict.js / interp.js (movement), events.js (kills, hits, damage, respawn),
// codec.js (snapshots). `window.tickwire` (state.js) mirrors the state tests read.

import { loadProto } from "./net.js";
import { Game } from "./game.js";
import { Lobby } from "./lobby.js";

async function main() {
  let types;
  try {
    types = await loadProto();
  } catch (err) {
    const b = document.getElementById("banner");
    b.textContent = `Cannot start: ${err.message}`;
    b.className = "banner error";
    b.hidden = false;
    throw err;
  }
  const game = new Game(types);
  window.tickwireGame = game; // for debugging from the console
  const lobby = new Lobby(game);
  window.tickwireLobby = lobby;
  // Every Join gets its seat from POST /matchmake (a single server answers it too).
  game.net.seat = () => lobby.seat();
  game.net.onSeatError = (err) => lobby.onSeatError(err);
  lobby.start();
}

main();

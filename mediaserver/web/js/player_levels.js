// The player's quality selector (ABR): "Auto" and one button per rendition the engine can choose between,
// and the readout of the rendition on screen.
//
// hls.js (over master.m3u8 or cmaf.m3u8) and dash.js (over manifest.mpd) pick the rendition by the
// measured bandwidth; a viewer may pin one (the engine switches at its next segment, the renditions being
// cut at the same instants) and go back to "Auto". Hidden while the engine offers fewer than two.

import {el, formatKbps} from './common.js';

export class QualityMenu {
  /**
   * @param {HTMLElement} container  the button group
   * @param {HTMLElement} readout    where the rendition on screen is named
   */
  constructor(container, readout) {
    this.container = container;
    this.readout = readout;
    this.engine = null;
  }

  attach(engine) {
    this.engine = engine;
    this.render();
  }

  detach() {
    this.engine = null;
    this.render();
  }

  render() {
    const engine = this.engine;
    const levels = engine ? engine.levels() : [];
    this.container.replaceChildren();
    if (levels.length < 2) {
      this.container.hidden = true;
      this.readout.textContent = '–';
      delete this.readout.dataset.label;
      return;
    }
    const {id, auto} = engine.level();
    const sorted = [...levels].sort((a, b) => b.height - a.height || b.bitrate - a.bitrate);
    const button = (text, pressed, title, pick) => {
      const b = el('button', {type: 'button', text, title, 'aria-pressed': String(pressed)});
      b.addEventListener('click', () => { if (this.engine) this.engine.pin(pick); });
      return b;
    };
    this.container.append(button('Auto', auto, 'Let the player choose by the bandwidth it measures', null));
    for (const level of sorted) {
      const b = button(name(level), !auto && level.id === id, `${size(level)}, ${formatKbps(level.bitrate / 1000)}`, level.id);
      b.dataset.level = level.label;
      this.container.append(b);
    }
    this.container.hidden = false;
    const playing = levels.find((l) => l.id === id);
    if (playing) {
      this.readout.textContent = `${name(playing)} · ${size(playing)}${auto ? ' (auto)' : ''}`;
      this.readout.dataset.label = playing.label;
      this.readout.dataset.height = String(playing.height);
      this.readout.dataset.auto = String(auto);
    } else {
      this.readout.textContent = auto ? 'auto' : '–';
    }
  }
}

function name(level) {
  return level.label === 'source' ? `Source ${level.height ? `${level.height}p` : ''}`.trim() : level.label;
}

function size(level) {
  return level.width && level.height ? `${level.width}×${level.height}` : 'size unknown';
}

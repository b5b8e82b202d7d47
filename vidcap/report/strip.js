// vidcap report: a card's strip of frames, and the roving focus of every strip and track.
// Inlined into the page before report.js, which calls vidcapStrip(page) once with what a
// strip needs from it: el, clock, number, thumb, hasThumb, isDamaged, and play (the player).
//
// A strip is a row of buttons that scrolls sideways: a video's first STRIP_FRAMES samples.
// "show all" makes it a window on every sample: a lane as wide as all of them side by side,
// holding buttons only for the samples in (and near) view, made as the strip scrolls and
// dropped as they leave it (every button is as wide as the next: measured once). The
// keyboard moves through every sample (the button it goes to is made first), and each
// button says where it is ("frame 5,001 of 100,000") to a screen reader. (Appending every
// sample's button instead, 400 an animation frame, took 22 s for 36,000 samples, each batch
// laying the whole row out again, and 360,000 never finished.)
window.vidcapStrip = function (page) {
  'use strict';

  var STRIP_FRAMES = 120;
  var AROUND = 8;  // buttons made past each side of the view (a fast scroll shows no gap)
  // A lane at most this wide: Chromium lays boxes out up to 2^25 px (33,554,431), and
  // 360,000 samples side by side are 48 million. A longer strip scrolls in proportion: a
  // pixel of its scroll bar is a few pixels of samples (every one still reached).
  var LANE_PX = 15000000;
  var wholes = [];  // the strips shown whole: drawn again when the window's width changes

  window.addEventListener('resize', function () {
    wholes = wholes.filter(function (whole) { return whole.draw(); });
  });

  // A strip of frames or a track of segments is one stop of the Tab key: the arrow keys,
  // Home and End move inside it, Enter or Space plays (each item is a button). The item
  // last focused (or clicked) is the one Tab comes back to. `moves` says which items are
  // the container's and which one a key goes to (by default: its children, in order; a strip
  // shown whole makes the one it goes to).
  function roving(container, moves) {
    moves = moves || inOrder(container);
    var first = container.firstElementChild;
    if (first) first.tabIndex = 0;
    container.addEventListener('focusin', function (event) {
      if (!moves.owns(event.target)) return;
      var current = container.querySelector('[tabindex="0"]');
      if (current && current !== event.target) current.tabIndex = -1;
      event.target.tabIndex = 0;
    });
    container.addEventListener('keydown', function (event) {
      var item = event.target;
      if (!moves.owns(item)) return;
      var next = null;
      var forward = event.key === 'ArrowRight' || event.key === 'ArrowDown';
      var back = event.key === 'ArrowLeft' || event.key === 'ArrowUp';
      var atLast = back || event.key === 'End';  // (a track's button: entered at its last span)
      if ((forward || back) && item.step && item.step(forward ? 1 : -1)) {
        event.preventDefault();  // (a step within a track's button of many spans)
        return;
      }
      if (forward || (event.key === 'PageDown' && item.step)) next = moves.next(item, 1);
      else if (back || (event.key === 'PageUp' && item.step)) next = moves.next(item, -1);
      else if (event.key === 'Home') next = moves.end(false);
      else if (event.key === 'End') next = moves.end(true);
      else return;
      event.preventDefault();
      if (!next) return;
      if (next.enter) next.enter(atLast);
      next.focus();
    });
  }

  function inOrder(container) {
    return {
      owns: function (node) { return node.parentNode === container; },
      next: function (item, by) {
        return by > 0 ? item.nextElementSibling : item.previousElementSibling;
      },
      end: function (last) { return last ? container.lastElementChild : container.firstElementChild; }
    };
  }

  // One sample of a strip: a button (its name: the time, a damage flag, the caption, and
  // where it is in the video's samples), so the keyboard plays it as the mouse does.
  function frameButton(video, i) {
    var el = page.el;
    var button = el('button', 'frame');
    button.type = 'button';
    button.tabIndex = -1;
    button.index = i;
    var frame = video.f[i];
    var caption = video.shard.captions[video.c[i]];
    if (page.hasThumb(video, frame)) button.appendChild(page.thumb(video, frame));
    var text = el('span', 'text');
    text.appendChild(el('span', 'time', page.clock(video.t[i])));
    if (page.isDamaged(video, frame)) {
      button.classList.add('damaged');
      button.title = 'this frame may show decoding damage (a corrupt stream)';
      text.appendChild(el('span', 'flag', 'damaged'));
    }
    var said = el('span', 'said', caption);
    said.dir = 'auto';
    text.appendChild(said);
    button.appendChild(text);
    button.appendChild(el('span', 'position',
      '(frame ' + page.number(i + 1) + ' of ' + page.number(video.t.length) + ')'));
    var end = i + 1 < video.t.length ? video.t[i + 1] : video.d;
    button.addEventListener('click', function () { page.play(video, video.t[i], end, i, caption); });
    return button;
  }

  // The card's strip (and its "show all" button, where the video has more samples).
  function addStrip(card, video) {
    var strip = page.el('div', 'strip');
    strip.setAttribute('role', 'toolbar');
    strip.setAttribute('aria-label', 'frames of ' + video.n + ': arrow keys move, Enter plays');
    var count = video.t.length;
    var shown = Math.min(count, STRIP_FRAMES);
    for (var i = 0; i < shown; i++) strip.appendChild(frameButton(video, i));
    var moves = inOrder(strip);
    roving(strip, moves);
    card.appendChild(strip);
    if (shown === count) return;
    var all = page.el('button', 'show-all', 'show all ' + page.number(count) + ' frames');
    all.type = 'button';
    all.addEventListener('click', function () {
      var focused = document.activeElement === all;
      var go = showAll(video, strip, moves);
      all.remove();
      if (focused) go(shown).focus();  // (the keyboard goes on from the first frame it adds)
    });
    card.appendChild(all);
  }

  // The strip made a window on every sample (above); `moves` (its roving focus) goes
  // through them all. Returns go(i): sample i's button, made and scrolled into view.
  function showAll(video, strip, moves) {
    var count = video.t.length;
    var cells = strip.children;
    var pitch = cells[1].offsetLeft - cells[0].offsetLeft;  // a button and the gap after it
    var width = cells[0].offsetWidth;
    var height = 0;
    for (var c = 0; c < cells.length; c++) height = Math.max(height, cells[c].offsetHeight);
    var stop = strip.querySelector('[tabindex="0"]');
    var current = stop ? stop.index : 0;  // the sample Tab comes back to: always made
    var was = strip.scrollLeft;
    var full = count * pitch - (pitch - width);  // every sample side by side
    var laneWidth = Math.min(full, LANE_PX);
    var lane = page.el('div', 'lane');
    lane.style.width = laneWidth + 'px';
    lane.style.height = height + 'px';  // (the tallest button so far: it never shrinks)
    var made = new Map();  // sample → its button, in the lane in sample order

    strip.textContent = '';
    strip.classList.add('whole');
    strip.appendChild(lane);

    // Samples' pixels per pixel of scroll: 1, unless the lane is cut at LANE_PX
    function ratio() {
      var view = strip.clientWidth;
      return laneWidth > view ? Math.max(1, (full - view) / (laneWidth - view)) : 1;
    }

    function draw() {
      if (!strip.isConnected) return false;  // (its card was drawn again: a filter)
      var k = ratio();
      var scroll = strip.scrollLeft;
      var from = scroll * k;  // where the view starts among the samples side by side
      var first = Math.max(0, Math.floor(from / pitch) - AROUND);
      var last = Math.min(count - 1, Math.floor((from + strip.clientWidth) / pitch) + AROUND);
      made.forEach(function (button, i) {
        if ((i < first || i > last) && i !== current) { button.remove(); made.delete(i); }
      });
      var wanted = [];
      if (current < first) wanted.push(current);
      for (var i = first; i <= last; i++) wanted.push(i);
      if (current > last) wanted.push(current);
      var next = lane.firstElementChild;
      var fresh = [];
      wanted.forEach(function (i) {
        var button = made.get(i);
        if (button) {
          next = button.nextElementSibling;
        } else {
          button = frameButton(video, i);
          if (i === current) button.tabIndex = 0;
          made.set(i, button);
          lane.insertBefore(button, next);
          fresh.push(button);
        }
        // (`current` far from the view: at the lane's end on its side, out of view)
        var x = Math.max(0, Math.min(laneWidth - width, i * pitch - scroll * (k - 1)));
        button.style.left = x + 'px';
      });
      fresh.forEach(function (button) { height = Math.max(height, button.offsetHeight); });
      lane.style.height = height + 'px';
      return true;
    }

    // Sample i's button wholly in view (or, `partly`, some of it)
    function inView(i, partly) {
      var at = i * pitch - strip.scrollLeft * ratio();
      var view = strip.clientWidth;
      return partly ? at + width > 0 && at < view : at >= -0.5 && at + width <= view + 0.5;
    }

    // The sample Tab comes back to: its button alone takes the Tab key (made when it is)
    function stopAt(i) {
      var before = made.get(current);
      if (before && i !== current) before.tabIndex = -1;
      current = i;
      if (made.has(i)) made.get(i).tabIndex = 0;
    }

    function go(i) {
      i = Math.max(0, Math.min(count - 1, i));
      if (!inView(i)) {
        var k = ratio();
        var view = strip.clientWidth;
        var ahead = i * pitch > strip.scrollLeft * k;
        // (rounded so that the whole button is in view: where the strip stops is a pixel)
        var scroll = ahead ? Math.ceil((i * pitch + width - view) / k) : Math.floor(i * pitch / k);
        strip.scrollLeft = Math.max(0, Math.min(laneWidth - view, scroll));
      }
      stopAt(i);
      draw();
      return made.get(i);
    }

    moves.owns = function (node) { return node.parentNode === lane; };
    moves.next = function (item, by) {
      var i = item.index + by;
      return i < 0 || i >= count ? null : go(i);
    };
    moves.end = function (last) { return go(last ? count - 1 : 0); };
    lane.addEventListener('focusin', function (event) {
      if (event.target.parentNode !== lane) return;
      stopAt(event.target.index);
      // (Tab back to a sample scrolled out of view: shown where it is; a click on one
      // partly in view moves nothing, or the click would end on another)
      if (!inView(current, true)) go(current);
    });
    strip.addEventListener('scroll', draw, { passive: true });
    strip.scrollLeft = was / ratio();  // the samples that were in view stay in view
    draw();
    wholes.push({ draw: draw });
    return go;
  }

  return { addStrip: addStrip, roving: roving };
};

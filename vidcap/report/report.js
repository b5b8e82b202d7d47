// vidcap report: the page's program (its strips of frames: strip.js, inlined before it).
// Data arrive as script files (report/data-*.js call vidcapShard, report/vtt/*.js call
// vidcapVtt): fetch() of local files is refused under file://, script elements are not. Every string from the data goes into the document as
// textContent or as an attribute value, never as markup.
(function () {
  'use strict';

  var manifest = JSON.parse(document.getElementById('vidcap-manifest').textContent);
  var CARDS_AT_ONCE = 4; // per animation frame, while the end of the list is in view
  var CARDS_MS = 20;     // and no card begun after this long in one frame (a long video's
                         // card takes 10-20 ms to make and lay out: four made a 100 ms task)
  var MOMENTS_AT_ONCE = 100;
  // Buttons of a track at most: a longer one (3 hours of 1-second cues: 10,000 of them, each
  // a tenth of a pixel wide) has one button per 1/200 of the timeline, holding the spans that
  // start there, and the arrow keys step through those one by one (trackButton).
  var TRACK_BUTTONS = 200;
  var WORD = '[\\p{L}\\p{N}_]'; // Python's \w in str patterns (JavaScript's \w is ASCII only)

  var videos = [];   // in folder order, as the shards arrive; video.shard: its shard
  var loaded = 0;    // shard scripts finished (loaded or failed)
  var missing = [];  // shard scripts that failed to load
  var vttTexts = {};
  var $ = function (id) { return document.getElementById(id); };
  // the strips of frames (strip.js, inlined before this file), and the roving focus of
  // strips and tracks
  var strips = window.vidcapStrip({
    el: el, clock: clock, number: number, thumb: thumb, hasThumb: hasThumb,
    isDamaged: isDamaged, play: openAt
  });
  var roving = strips.roving;

  // --- data -----------------------------------------------------------------------------

  window.vidcapShard = function (data) {
    var shard = { captions: data.captions, videos: data.videos };
    data.videos.forEach(function (video) {
      video.shard = shard;
      video.order = videos.length;
      videos.push(video);
    });
  };

  window.vidcapVtt = function (id, text) { vttTexts[id] = text; };

  var ready = new Promise(function (resolve) {
    var files = manifest.shards;
    if (!files.length) { resolve(); return; }
    files.forEach(function (file) {
      var script = document.createElement('script');
      script.async = false; // fetched together, run in order
      script.src = file;
      script.onload = script.onerror = function (event) {
        if (event.type === 'error') missing.push(file);
        loaded += 1;
        showLoading();
        if (loaded < files.length) { fill(); return; }
        fillNow(); // `ready` means the first cards are on the page, not one frame later
        resolve();
      };
      document.head.appendChild(script);
    });
  });

  function showLoading() {
    var total = manifest.shards.length;
    var text = loaded < total ? 'loading ' + videos.length + ' of ' + manifest.videos + ' videos…' : '';
    if (missing.length) {
      text += ' could not load ' + missing.join(', ') + ': rerun `vidcap report` on this folder';
    }
    $('loading').textContent = text;
  }

  // --- the segments of vidcap.mask, ported: frame i covers [t[i], t[i+1]); the last frame
  // ends at `end`; in a --scenes folder a frame covers its part of its shot (frameSpans);
  // runs of matches; gaps < mergeGap closed, then segments < minDuration dropped; seconds
  // compared at the microsecond.

  function micro(seconds) { return Math.round(seconds * 1e6); }
  function shorter(seconds, limit) { return micro(seconds) < micro(limit); }

  // vidcap.mask.frame_spans: a shot's first sample covers from the shot's start, its last
  // to the shot's end (`scenes`: [start, end, caption] each, in time order)
  function frameSpans(times, ends, scenes) {
    var starts = times.slice();
    if (!scenes || !scenes.length) return starts;
    var shots = times.map(function (time) {
      var at = micro(time), lo = 0, hi = scenes.length;
      while (lo < hi) {
        var mid = (lo + hi) >> 1;
        if (micro(scenes[mid][0]) <= at) lo = mid + 1; else hi = mid;
      }
      var k = lo - 1;
      return k >= 0 && at < micro(scenes[k][1]) ? k : -1;
    });
    for (var i = 0; i < shots.length; i++) {
      var k = shots[i];
      if (k < 0) continue;
      if (i === 0 || shots[i - 1] !== k) starts[i] = scenes[k][0];
      if (i === shots.length - 1 || shots[i + 1] !== k) ends[i] = scenes[k][1];
    }
    return starts;
  }

  function segments(times, flags, end, mergeGap, minDuration, scenes) {
    var ends = times.slice(1);
    ends.push(end);
    var starts = frameSpans(times, ends, scenes);
    var runs = [];
    var start = -1;
    for (var i = 0; i < flags.length; i++) {
      if (flags[i] && start < 0) start = i;
      if (start >= 0 && (!flags[i] || i === flags.length - 1)) {
        var last = flags[i] ? i : i - 1;
        runs.push({ start: starts[start], end: ends[last], frames: last - start + 1 });
        start = -1;
      }
    }
    var closed = [];
    runs.forEach(function (run) {
      var previous = closed[closed.length - 1];
      if (previous && shorter(run.start - previous.end, mergeGap)) {
        closed.pop();
        run = { start: previous.start, end: run.end, frames: previous.frames + run.frames };
      }
      closed.push(run);
    });
    return closed.filter(function (s) { return !shorter(s.end - s.start, minDuration); });
  }

  // --- matching: vidcap.mask.compile_queries, ported ---------------------------------------

  // Python's whitespace (str.split and strip, re's \s): JavaScript's \s and trim() add
  // U+FEFF and leave out U+001C-U+001F and U+0085, so a caption holding one was found by
  // one search and not the other. Words are split, and blank text told, as Python does.
  var SPACE = '[\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
  var SPACES = new RegExp(SPACE + '+', 'u');
  var SOMETHING = new RegExp('[^' + SPACE.slice(1), 'u');  // (no array made per caption)
  function blank(text) { return !SOMETHING.test(text); }

  function escapeRegex(text) { return text.replace(/[.*+?^${}()|[\]\\\/]/g, '\\$&'); }

  // Python's re.IGNORECASE takes the Turkish dotted capital I and dotless i as i; the 'iu'
  // flags (Unicode simple case folding) take each only as itself. Both are written as i
  // here, in the query and in every caption searched: one character for one, so the same
  // captions match as in vidcap search.
  function turkic(text) { return text.replace(/[\u0130\u0131]/g, 'i'); }

  function phrasePattern(query) {
    var words = query.split(SPACES).filter(Boolean);
    var body = words.map(escapeRegex).join(SPACE + '+');
    var head = new RegExp('^' + WORD, 'u').test(words[0]) ? '(?<!' + WORD + ')' : '';
    var tail = new RegExp(WORD + '$', 'u').test(words[words.length - 1]) ? '(?!' + WORD + ')' : '';
    return head + body + tail;
  }

  function compile(query, regex) {
    if (blank(query)) throw new Error('the query is empty');
    query = turkic(query);
    if (!regex) return new RegExp(phrasePattern(query), 'iu');
    try {
      return new RegExp(query, 'iu');
    } catch (error) {
      // (read without 'u', \Z, a{,3} and \N{...} were taken as plain text: other moments
      // than vidcap search's, silently)
      throw new Error('not a regular expression this page reads (JavaScript\'s syntax: ' +
        error.message + '); vidcap search reads Python\'s');
    }
  }

  // --- search -----------------------------------------------------------------------------

  function rank(a, b) {
    return (b.frames - a.frames) || ((b.end - b.start) - (a.end - a.start)) ||
      (a.video.order - b.video.order) || (a.start - b.start);
  }

  function search(query, options) {
    options = options || {};
    var mergeGap = Number(options.mergeGap) || 0;
    var minDuration = Number(options.minDuration) || 0;
    if (mergeGap < 0 || minDuration < 0) throw new Error('gaps and durations are seconds >= 0');
    var pattern = compile(query, !!options.regex);
    var started = performance.now();
    var moments = [];
    var frames = 0;
    var hitVideos = 0;
    var shard = null;
    var hits = null;
    for (var v = 0; v < videos.length; v++) {
      var video = videos[v];
      if (!video.c) continue;
      if (video.shard !== shard) {
        shard = video.shard;
        if (!shard.folded) shard.folded = shard.captions.map(turkic);
        hits = shard.folded.map(function (caption) { return pattern.test(caption); });
      }
      frames += video.c.length;
      var flags = null;
      for (var i = 0; i < video.c.length; i++) {
        if (hits[video.c[i]]) { flags = video.c.map(function (id) { return hits[id]; }); break; }
      }
      if (!flags) continue;
      var found = segments(video.t, flags, video.d, mergeGap, minDuration, video.sc);
      if (found.length) hitVideos += 1;
      var first = 0;
      found.forEach(function (segment) {
        while (!(flags[first] && video.t[first] >= segment.start)) first += 1;
        var damaged = 0;  // matching frames that may show decoding damage (vidcap search)
        if (video.dm && video.dm.length) {
          for (var j = first; j < video.t.length && video.t[j] < segment.end; j++) {
            if (flags[j] && isDamaged(video, video.f[j])) damaged += 1;
          }
        }
        moments.push({
          video: video, name: video.n, start: segment.start, end: segment.end,
          frames: segment.frames, frame: video.f[first],
          caption: shard.captions[video.c[first]], damaged: damaged
        });
      });
    }
    moments.sort(rank);
    return {
      moments: moments, videos: hitVideos, searchedVideos: videos.length, frames: frames,
      ms: performance.now() - started
    };
  }

  // --- small DOM helpers ----------------------------------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // "1 video", "2 videos", "1,250 frames": as vidcap.wording.counted says them.
  function counted(count, noun) {
    return number(count) + ' ' + noun + (count === 1 ? '' : 's');
  }

  // 100,000: as toLocaleString('en') writes a count, without its first call's 40 ms or so
  // (the locale's data loaded) in the page's first task
  function number(count) { return String(count).replace(/\B(?=(\d{3})+(?!\d))/g, ','); }

  // (down to the millisecond, as the subtitles' cue times: vidcap.outputs._millis)
  function clock(seconds) {
    var ms = Math.floor(seconds * 1000 + 1e-6);
    var h = Math.floor(ms / 3600000);
    var m = Math.floor(ms / 60000) % 60;
    var s = (ms % 60000) / 1000;
    var text = (h ? h + ':' + String(m).padStart(2, '0') : String(m)) + ':' +
      s.toFixed(3).padStart(6, '0');
    return text;
  }

  function thumbUrl(video, frame) {
    return 'thumbs/' + encodeURIComponent(video.n) + '/' + String(frame).padStart(6, '0') + '.jpg';
  }

  function hasThumb(video, frame) {
    if (video.th === 1) return true;
    if (!Array.isArray(video.th)) return false;
    if (!video.thumbSet) video.thumbSet = new Set(video.th);
    return video.thumbSet.has(frame);
  }

  function thumb(video, frame, className) {
    if (!hasThumb(video, frame)) return el('span', className || 'nothumb');
    var img = el('img', className);
    img.loading = 'lazy';
    img.alt = '';
    img.src = thumbUrl(video, frame);
    return img;
  }

  function videoEnd(video) {
    var times = video.t || [];
    return Math.max(video.D || 0, video.d || 0, times.length ? times[times.length - 1] : 0);
  }

  // --- cards ------------------------------------------------------------------------------

  function cues(video) {
    // The cues of the video's subtitles: with scenes, vidcap.outputs.scene_cues (one per
    // shot with a caption, none of zero length at the millisecond); else merge_cues
    if (video.sc && video.sc.length) {
      return video.sc.filter(function (s) {
        return !blank(s[2]) && Math.round(s[1] * 1000) > Math.round(s[0] * 1000);
      }).map(function (s) { return sceneSpan(video, s); });
    }
    return frameCues(video);
  }

  function sceneSpan(video, scene) {
    // a shot as a span; its index: the first sample inside it with the shot's caption
    // (the picture shown when the source cannot play)
    var lo = 0, hi = video.t.length;  // the first sample at or after the shot's start
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (video.t[mid] < scene[0]) lo = mid + 1; else hi = mid;
    }
    var index = null;
    for (var i = lo; i < video.t.length && video.t[i] < scene[1] && index === null; i++) {
      if (video.shard.captions[video.c[i]] === scene[2]) index = i;
    }
    return { start: scene[0], end: scene[1], text: scene[2], index: index };
  }

  function frameCues(video) {
    // vidcap.outputs.merge_cues: equal consecutive captions are one cue; none empty or of
    // zero length at the millisecond; the last ends at the video's end
    var out = [];
    var times = video.t;
    var end = video.D || video.d;
    var start = 0;
    var empty = video.shard.empty || (video.shard.empty = []);  // blank(caption), by number
    for (var i = 1; i <= times.length; i++) {
      if (i < times.length && video.c[i] === video.c[start]) continue;
      var id = video.c[start];
      var text = video.shard.captions[id];
      var stop = i < times.length ? times[i] : end;
      if (empty[id] === undefined) empty[id] = blank(text);
      if (!empty[id] && Math.round(stop * 1000) > Math.round(times[start] * 1000)) {
        out.push({ start: times[start], end: stop, text: text, index: start });
      }
      start = i;
    }
    return out;
  }

  // A track: one button per span, or, where there are more than TRACK_BUTTONS spans, one per
  // 1/TRACK_BUTTONS of the timeline, holding the spans that start there (those are under a
  // pixel or two wide: drawn one by one they made 10,000 buttons, the page frozen for a
  // second per card and every later redraw slow). Every span is still reached: the mouse
  // plays the span under the pointer (its tooltip follows it), the arrow keys step through a
  // button's spans before going on to the next button (its name is the span it is on), End
  // goes to the very last span, Page Up and Page Down go from button to button.
  function track(video, className, label, spans) {
    var total = videoEnd(video) || 1;
    var wrap = el('div');
    wrap.appendChild(el('div', 'track-label', label));
    var bar = el('div', 'track ' + className);
    bar.setAttribute('role', 'toolbar');
    bar.setAttribute('aria-label', label + ' of ' + video.n + ': arrow keys move, Enter plays' +
      (spans.length > TRACK_BUTTONS ? ', Page Up and Page Down skip' : ''));
    var from = 0;
    var bucket = -1;  // the 1/TRACK_BUTTONS of the timeline that spans[from] starts in
    for (var i = 0; i < spans.length; i++) {
      var at = spans.length > TRACK_BUTTONS ?
        Math.max(0, Math.min(TRACK_BUTTONS - 1, Math.floor(TRACK_BUTTONS * spans[i].start / total))) : i;
      if (i > from && at !== bucket) {
        bar.appendChild(trackButton(video, spans, from, i - 1, total));
        from = i;
      }
      bucket = at;
    }
    if (spans.length) bar.appendChild(trackButton(video, spans, from, spans.length - 1, total));
    roving(bar);
    wrap.appendChild(bar);
    return wrap;
  }

  // The button of spans[first..last] (most often one span): it is on one of them at a time,
  // the first at the start, and plays that one (its title and name say which).
  function trackButton(video, spans, first, last, total) {
    var part = el('button');
    part.type = 'button';
    part.tabIndex = -1;
    part.style.left = (100 * spans[first].start / total) + '%';
    part.style.width = (100 * (spans[last].end - spans[first].start) / total) + '%';
    var on = first;
    function show(i) {
      on = i;
      var span = spans[i];
      part.title = clock(span.start) + ' – ' + clock(span.end) + (span.text ? '  ' + span.text : '');
      part.setAttribute('aria-label', last > first ?
        part.title + ' (' + (i - first + 1) + ' of ' + (last - first + 1) + ' here)' : part.title);
    }
    function under(x) {  // the span under the pointer (the last one starting before it)
      var box = part.parentNode.getBoundingClientRect();
      var time = (x - box.left) / (box.width || 1) * total;
      var lo = first + 1, hi = last + 1;
      while (lo < hi) {
        var mid = (lo + hi) >> 1;
        if (spans[mid].start <= time) lo = mid + 1; else hi = mid;
      }
      return lo - 1;
    }
    show(first);
    // (for the keyboard: one step within, false at its end; entered at its first or last)
    part.step = function (by) {
      if (on + by < first || on + by > last) return false;
      show(on + by);
      return true;
    };
    part.enter = function (atLast) { show(atLast ? last : first); };
    if (last > first) {
      part.addEventListener('mousemove', function (event) { show(under(event.clientX)); });
    }
    part.addEventListener('click', function (event) {
      if (event.detail > 0 && last > first) show(under(event.clientX));  // (0: Enter or Space)
      var span = spans[on];
      openAt(video, span.start, span.end, span.index, span.text);
    });
    return part;
  }

  function isDamaged(video, frame) {
    // video.dm: the decoder indices of the damaged samples, sorted (few, or none)
    if (!video.dm || !video.dm.length) return false;
    if (!video.dmSet) video.dmSet = new Set(video.dm);
    return video.dmSet.has(frame);
  }

  function card(video) {
    var node = el('article', 'card');
    node.dataset.name = video.n;
    var name = el('h3', null, video.n);
    name.dir = 'auto';
    node.appendChild(name);
    node.appendChild(el('span', 'status ' + video.s, video.s));
    var facts = clock(video.D || 0) + ' · ' + counted(video.F || 0, 'frame');
    node.appendChild(el('span', 'facts', facts));
    node.appendChild(el('div', 'source', video.v));
    if (video.e) node.appendChild(el('p', 'error', video.e));
    if (video.L) {
      node.appendChild(el('p', 'problem', counted(video.L, 'frame') +
        ' could not be decoded (a corrupt or truncated file): captioned as far as it decodes'));
    }
    if (video.dm && video.dm.length) {
      node.appendChild(el('p', 'problem', counted(video.dm.length, 'sampled frame') +
        ' may show decoding damage (a corrupt stream): marked "damaged" here and in the captions'));
    }
    if (video.p) node.appendChild(el('p', 'problem', video.p));
    if (video.why) node.appendChild(el('p', 'problem', 'player: ' + video.why));
    if (!video.t || !video.t.length) {
      if (video.s === 'done') node.appendChild(el('p', 'problem', 'no captions'));
      return node;
    }
    node.appendChild(track(video, 'cues', 'captions (cues)', cues(video)));
    if (video.sc && video.sc.length) {
      node.appendChild(track(video, 'scenes', 'scenes', video.sc.map(function (s) {
        return sceneSpan(video, s);
      })));
    }
    if (video.mk) {
      node.appendChild(track(video, 'mask', 'vidcap mask: ' + video.mk.label, video.mk.seg.map(function (s) {
        return { start: s[0], end: s[1], text: counted(s[2], 'frame') + (s[3] ? ' (' + s[3] + ' damaged)' : '') };
      })));
    }
    strips.addStrip(node, video);
    return node;
  }

  var cursor = 0; // next index of `videos` to consider for a card
  var filling = false;
  var whenDrawn = []; // drawn()'s waiters: called once no card is left for a later frame

  function wanted(video) {
    var filter = $('status-filter').value;
    if (filter === 'damaged') return video.s === 'done' && (video.L > 0 || (video.dm && video.dm.length > 0));
    return filter === 'all' || video.s === filter;
  }

  function fill() {
    if (filling) return;
    filling = true;
    requestAnimationFrame(function () { filling = false; fillNow(); });
  }

  function fillNow() {
    var cards = $('cards');
    var added = 0;
    var started = performance.now();
    var more = true;
    while (cursor < videos.length &&
           (more = added < CARDS_AT_ONCE && performance.now() - started < CARDS_MS) &&
           $('sentinel').getBoundingClientRect().top < window.innerHeight + 1500) {
      var video = videos[cursor++];
      if (wanted(video)) { cards.appendChild(card(video)); added += 1; }
    }
    if (!more) fill();  // (the next frame goes on)
    else if (!filling) whenDrawn.splice(0).forEach(function (resolve) { resolve(); });
    var none = cursor >= videos.length && videos.length && !cards.firstChild;
    $('no-videos').textContent = none ? 'no video is ' + $('status-filter').value : '';
  }

  // What the keyboard focuses is never under the sticky header, nor under the open player:
  // the page keeps a margin of their heights when it scrolls to a focused item, and the
  // page's end can scroll above the player.
  function keepClear() {
    var header = $('top');
    var root = document.documentElement.style;
    var sticky = getComputedStyle(header).position === 'sticky';
    root.scrollPaddingTop = sticky ? (header.offsetHeight + 8) + 'px' : '';
    var open = !$('player').hidden;
    var below = open ? ($('player').offsetHeight + 24) + 'px' : '';
    root.scrollPaddingBottom = below;
    document.querySelector('main').style.paddingBottom = below;
  }
  if (window.ResizeObserver) {
    var watch = new ResizeObserver(keepClear);
    watch.observe($('top'));
    watch.observe($('player'));
  }
  window.addEventListener('resize', keepClear);

  // --- the player -----------------------------------------------------------------------

  var player = $('video');
  var pendingSeek = null;
  var wholeAt = null;     // where to play the video being loaded whole: the latest click's
  var opener = null;      // what had the focus when the player opened: it gets it back
  var shownThumb = null;  // the thumbnail of the moment in the player, if there is one
  // A cue ends where the next starts, and a browser seeking to that instant shows both:
  // the player seeks this far past a moment's start (less than a frame at 1000 fps).
  var PAST_CUE_END = 0.0005;
  var WHOLE_LIMIT = 512 * 1024 * 1024; // bytes fetched at most to seek without range requests

  player.addEventListener('loadedmetadata', function () {
    if (pendingSeek !== null) { var at = pendingSeek; pendingSeek = null; seekTo(at); }
  });

  function canSeek(seconds) {
    var ranges = player.seekable;
    for (var i = 0; i < ranges.length; i++) {
      if (ranges.start(i) <= seconds && seconds <= ranges.end(i)) return true;
    }
    return false;
  }

  function seekableEnd() {
    var ranges = player.seekable;
    return ranges.length ? ranges.end(ranges.length - 1) : 0;
  }

  // A video whose picture starts late (an MP4 whose edit list begins with an empty edit) is
  // first given by Chromium the length of its picture alone, from where it starts (8 s of
  // a picture from 5 s: a timeline to 8 s, not 13), lengthened as the browser reads on
  // (a few seconds past where it plays): a moment past that end is reached by seeking to
  // the end, again as it moves, then to the moment once the timeline holds it. Setting
  // currentTime past the end would stop at the end, showing another moment, saying nothing.
  var REACH_WAIT_MS = 3000;  // with no lengthening for this long, the timeline is whole
  var reach = null;          // {target, name, last, timer}: the moment being reached

  function stopReaching() {
    if (reach !== null) clearTimeout(reach.timer);
    reach = null;
  }

  function reachFor(seconds) {
    stopReaching();
    reach = { target: seconds, name: player.dataset.name, last: 0, timer: null };
    waitToReach();
    stepOn();
  }

  function stepOn() {  // to the timeline's end, where it has moved since the last step
    var end = seekableEnd();
    if (end > reach.last) {
      reach.last = end;
      player.currentTime = end;
    }
  }

  player.addEventListener('seeked', function () {  // (lengthened while it sought: on)
    if (reach === null || reach.name !== player.dataset.name || canSeek(reach.target)) return;
    waitToReach();
    stepOn();
  });

  function waitToReach() {
    clearTimeout(reach.timer);
    reach.timer = setTimeout(function () {
      var target = reach.target;
      var same = reach.name === player.dataset.name;
      stopReaching();
      if (!same) return;
      if (!player.dataset.whole && /^https?:/.test(player.currentSrc)) {
        fetchWhole(target);  // (a server without range requests, which seeks in what it has)
        return;
      }
      trouble('this moment, at ' + clock(target) + ', is past the end of the video as the ' +
        'browser plays it (' + clock(seekableEnd()) + ')');
    }, REACH_WAIT_MS);
  }

  player.addEventListener('durationchange', function () {
    if (reach === null) return;
    if (reach.name !== player.dataset.name) { stopReaching(); return; }
    if (canSeek(reach.target)) {
      var target = reach.target;
      stopReaching();
      player.currentTime = target;
    } else {
      waitToReach();  // (lengthened, not far enough yet)
      if (!player.seeking) stepOn();
    }
  });

  function seekTo(seconds) {
    stopReaching();
    if (player.dataset.whole === 'loading') {  // (a click while it loads: played from memory)
      wholeAt = seconds;
      return;
    }
    if (seconds === 0 || canSeek(seconds)) {
      player.currentTime = seconds;
      return;
    }
    if (seekableEnd() > 0) {
      reachFor(seconds);
      return;
    }
    if (player.dataset.whole) {
      player.currentTime = seconds;
      return;
    }
    fetchWhole(seconds);
  }

  function fetchWhole(seconds) {
    // A web server that does not answer range requests (python -m http.server) leaves the
    // browser unable to seek: fetch the whole video once and play it from memory.
    var name = player.dataset.name;
    player.dataset.whole = 'loading';
    wholeAt = seconds;
    trouble('this web server does not answer range requests, so the browser cannot seek; ' +
      'loading the whole video…');
    var stop = new AbortController();
    fetch(player.currentSrc, { signal: stop.signal }).then(function (response) {
      var size = Number(response.headers.get('content-length')) || 0;
      if (!response.ok) throw new Error('HTTP ' + response.status);
      if (size > WHOLE_LIMIT) { stop.abort(); throw new Error('the video is too big to load whole'); }
      return response.blob();
    }).then(function (blob) {
      if (player.dataset.name !== name) return;
      player.dataset.whole = 'yes';
      pendingSeek = wholeAt;  // (a moment clicked while it loaded, not the first one)
      player.src = URL.createObjectURL(blob);
      trouble(null);
    }).catch(function (error) {
      if (player.dataset.name !== name) return;
      player.dataset.whole = 'failed';  // (not loading: later clicks play what they can)
      trouble('cannot seek: this web server does not answer range requests (' + error.message +
        '); open index.html from disk, or serve the folder with a server that does');
    });
  }

  // What is wrong with the source in the player, said under it until another source loads:
  // kept on the player, so that a second click on the same video (which loads nothing, so
  // no 'error' event comes again) says it again instead of a blank player.
  function trouble(text) {
    if (text === null) delete player.dataset.trouble;
    else player.dataset.trouble = text;
    showTrouble();
  }

  function showTrouble() {
    var why = $('player-why');
    if (player.dataset.trouble) why.textContent = player.dataset.trouble;
    why.hidden = !player.dataset.trouble;
    if (player.dataset.broken && shownThumb) {  // the moment's picture, not a black box
      player.hidden = true;
      $('player-thumb').src = shownThumb;
      $('player-thumb').hidden = false;
    }
  }

  player.addEventListener('error', function () {
    player.dataset.broken = 'yes';
    var code = player.error ? player.error.code : 0;
    var src = player.getAttribute('src') || '';
    try { src = decodeURI(src); } catch (malformed) { /* shown as it is */ }
    trouble('the browser could not play ' + src +
      (code === 4 ? ' (file missing, or a format it cannot decode)' : ' (error ' + code + ')'));
  });

  function loadVtt(video, done) {
    if (!video.vt) { done(null); return; }
    var id = video.vt.replace(/^.*\//, '').replace(/\.js$/, '');
    if (id in vttTexts) { done(vttTexts[id]); return; }
    var script = document.createElement('script');
    script.src = video.vt;
    script.onload = function () { done(id in vttTexts ? vttTexts[id] : null); };
    script.onerror = function () { done(null); };
    document.head.appendChild(script);
  }

  function attachTrack(video) {
    // (the old track disabled before it goes: removed showing, it left its last cue drawn
    // over every picture of the next video, in Chromium)
    Array.prototype.slice.call(player.querySelectorAll('track')).forEach(function (t) {
      t.track.mode = 'disabled';
      t.remove();
    });
    loadVtt(video, function (text) {
      if (text === null || player.dataset.name !== video.n) return;
      var node = document.createElement('track');
      node.kind = 'captions';
      node.label = 'captions';
      node.srclang = 'en';
      node.default = true;
      node.src = URL.createObjectURL(new Blob([text], { type: 'text/vtt' }));
      player.appendChild(node);
      node.track.mode = 'showing';
    });
  }

  function openAt(video, start, end, index, caption) {
    var aside = $('player');
    if (!aside.contains(document.activeElement)) opener = document.activeElement;
    aside.hidden = false;
    $('player-title').textContent = video.n;
    $('player-time').textContent = clock(start) + ' – ' + clock(end);
    $('player-caption').textContent = caption || '';
    var why = $('player-why');
    why.hidden = true;
    var picture = $('player-thumb');
    var frame = video.f && index !== undefined && index !== null ? video.f[index] : null;
    shownThumb = frame !== null && hasThumb(video, frame) ? thumbUrl(video, frame) : null;
    aside.focus({ preventScroll: true });  // (Tab goes on to its controls, Escape closes it)
    keepClear();
    if (video.src) {
      picture.hidden = true;
      player.hidden = false;
      if (player.dataset.name !== video.n) {
        if (player.src.indexOf('blob:') === 0) URL.revokeObjectURL(player.src);
        delete player.dataset.whole;
        delete player.dataset.trouble;
        delete player.dataset.broken;
        player.dataset.name = video.n;
        player.setAttribute('aria-label', 'video: ' + video.n);
        player.src = video.src;
        attachTrack(video);
      }
      showTrouble();  // (the same video: what went wrong with it still stands)
      var at = start > 0 ? Math.min(start + PAST_CUE_END, Math.max(start, end)) : start;
      if (player.readyState >= 1) seekTo(at);
      else pendingSeek = at;
      return;
    }
    player.pause();
    player.hidden = true;
    if (frame !== null && hasThumb(video, frame)) {
      picture.src = thumbUrl(video, frame);
      picture.hidden = false;
    } else {
      picture.hidden = true;
    }
    why.textContent = 'cannot play this video here: ' + video.why;
    why.hidden = false;
  }

  function closePlayer() {
    player.pause();
    $('player').hidden = true;
    keepClear();
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  }

  $('player-close').addEventListener('click', closePlayer);
  document.addEventListener('keydown', function (event) {
    if (event.key !== 'Escape' || $('player').hidden || event.defaultPrevented) return;
    if (event.target.tagName === 'INPUT' && event.target.value) return;  // (it clears the box)
    closePlayer();
  });

  // --- the search box -------------------------------------------------------------------

  var lastResult = null;
  var momentsShown = 0;

  function momentItem(moment) {
    var item = el('li');
    var button = el('button', 'moment');
    button.type = 'button';
    button.appendChild(thumb(moment.video, moment.frame));
    var what = el('span', 'what');
    what.appendChild(el('span', 'name', moment.name));
    what.appendChild(el('span', 'times', ' ' + clock(moment.start) + ' – ' + clock(moment.end)));
    what.appendChild(el('span', 'count', ' · ' + counted(moment.frames, 'frame')));
    if (moment.damaged) what.appendChild(el('span', 'flag', ' (' + moment.damaged + ' damaged)'));
    var caption = el('div', 'caption', moment.caption);
    caption.dir = 'auto';
    what.appendChild(caption);
    button.appendChild(what);
    var index = moment.video.f.indexOf(moment.frame);
    button.addEventListener('click', function () {
      openAt(moment.video, moment.start, moment.end, index, moment.caption);
    });
    item.appendChild(button);
    return item;
  }

  function showMoments() {
    var list = $('moments');
    var stop = Math.min(lastResult.moments.length, momentsShown + MOMENTS_AT_ONCE);
    for (var i = momentsShown; i < stop; i++) list.appendChild(momentItem(lastResult.moments[i]));
    momentsShown = stop;
    $('more-moments').hidden = momentsShown >= lastResult.moments.length;
  }

  function runSearch() {
    var query = $('query').value;
    var status = $('search-status');
    $('moments').textContent = '';
    momentsShown = 0;
    if (blank(query)) {
      $('results').hidden = true;
      status.textContent = '';
      return;
    }
    try {
      lastResult = search(query, {
        regex: $('regex').checked,
        mergeGap: $('merge-gap').value,
        minDuration: $('min-duration').value
      });
    } catch (error) {
      $('results').hidden = true;
      status.textContent = error.message;
      return;
    }
    var r = lastResult;
    var text = counted(r.moments.length, 'moment') + ' in ' + counted(r.videos, 'video') + ' · ' +
      counted(r.frames, 'caption') + ' of ' + counted(r.searchedVideos, 'video') +
      ' searched in ' + Math.round(r.ms) + ' ms';
    if (loaded < manifest.shards.length) text += ' (still loading; searched again when done)';
    status.textContent = text;
    $('results').hidden = false;
    showMoments();
  }

  var typing = null;
  $('search').addEventListener('submit', function (event) { event.preventDefault(); runSearch(); });
  ['query', 'merge-gap', 'min-duration'].forEach(function (id) {
    $(id).addEventListener('input', function () {
      clearTimeout(typing);
      typing = setTimeout(runSearch, 250);
    });
  });
  $('regex').addEventListener('change', runSearch);
  $('more-moments').addEventListener('click', showMoments);
  $('status-filter').addEventListener('change', function () {
    $('cards').textContent = '';
    cursor = 0;
    fill();
  });
  window.addEventListener('scroll', fill, { passive: true });
  window.addEventListener('resize', fill);

  // --- start ------------------------------------------------------------------------------

  document.title = 'vidcap report: ' + manifest.title;
  $('title').textContent = 'vidcap report: ' + manifest.title;
  $('totals').textContent = counted(manifest.videos, 'video') + ' · ' + number(manifest.done) +
    ' done · ' + number(manifest.failed) + ' failed · ' +
    (manifest.damaged ? number(manifest.damaged) + ' damaged (corrupt or cut off) · ' : '') +
    counted(manifest.frames, 'frame') + ' · ' + clock(manifest.duration) +
    ' of video · vidcap ' + manifest.version;
  showLoading();
  keepClear();
  ready.then(function () {
    showLoading();
    if (!blank($('query').value)) runSearch();
  });

  // For scripts and tests: the same search the box runs, and the data.
  window.vidcapReport = {
    ready: ready,
    // Resolves once the cards in (and near) view are all drawn: `ready` means the first ones
    // are, and a slow machine draws the rest over a few more frames.
    drawn: function () {
      return ready.then(function () {
        return new Promise(function (resolve) {
          if (filling) whenDrawn.push(resolve); else resolve();
        });
      });
    },
    search: function (query, options) {
      var result = search(query, options);
      result.moments = result.moments.map(function (m) {
        return {
          name: m.name, start: m.start, end: m.end, frames: m.frames, frame: m.frame,
          caption: m.caption, damaged: m.damaged
        };
      });
      return result;
    },
    videos: videos,
    open: openAt
  };
})();

// Loaded into a benchmarked controller with `node --require` (the controller benchmark's
// `breakdown` part only; never in the image): on SIGUSR2 it writes where the process's memory is
// to $KEYROLL_DIAG_DIR/<label>.json — process.memoryUsage(), V8's heap statistics and heap
// spaces, code statistics, the builtin modules loaded since start, active handles — and, when
// asked, a heap snapshot to <label>.heapsnapshot. The benchmark names the label and asks for a
// snapshot in $KEYROLL_DIAG_DIR/request.json before it sends the signal, and waits for
// <label>.done; it can also sample allocations (`sampling`: start, stop). Plain CommonJS, builtins only, so that it adds as little as it can to what it
// measures (its own modules, node:v8, are listed apart).
'use strict';
const v8 = process.getBuiltinModule('node:v8');
const fs = process.getBuiltinModule('node:fs');
const path = process.getBuiltinModule('node:path');

const dir = process.env.KEYROLL_DIAG_DIR;
const atPreload = process.moduleLoadList.length;

process.on('SIGUSR2', () => {
  if (!dir) return;
  const request = JSON.parse(fs.readFileSync(path.join(dir, 'request.json'), 'utf8'));
  const label = String(request.label);
  const counts = {};
  for (const r of process.getActiveResourcesInfo()) counts[r] = (counts[r] ?? 0) + 1;
  const out = {
    label,
    at: new Date().toISOString(),
    memoryUsage: process.memoryUsage(),
    heap: v8.getHeapStatistics(),
    spaces: v8.getHeapSpaceStatistics(),
    code: v8.getHeapCodeStatistics(),
    activeResources: counts,
    // Node's own list: `NativeModule x` are builtin JS modules, `Internal Binding x` C++ bindings.
    modulesAtPreload: process.moduleLoadList.slice(0, atPreload),
    modulesSincePreload: process.moduleLoadList.slice(atPreload),
  };
  fs.writeFileSync(path.join(dir, `${label}.json`), JSON.stringify(out));
  if (request.snapshot) v8.writeHeapSnapshot(path.join(dir, `${label}.heapsnapshot`));
  const done = () => fs.writeFileSync(path.join(dir, `${label}.done`), '');
  // Allocation sampling that keeps what a minor GC promoted and a major GC collected: where the
  // old-space garbage comes from. 'start' begins it; 'stop' writes <label>.heapprofile.
  if (request.sampling === 'start') {
    session ??= new (process.getBuiltinModule('node:inspector').Session)();
    session.connect();
    session.post(
      'HeapProfiler.startSampling',
      { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: false },
      done,
    );
    return;
  }
  if (request.sampling === 'stop' && session) {
    session.post('HeapProfiler.stopSampling', (err, r) => {
      if (!err) fs.writeFileSync(path.join(dir, `${label}.heapprofile`), JSON.stringify(r.profile));
      session.disconnect();
      done();
    });
    return;
  }
  done();
});
let session = null;

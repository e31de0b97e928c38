"""The I/O around the pure engine, without kopf: everything the operator does.

- `runs`: the run driver (a task while a run acts), `drivers`: the runs this process
  drives or parks (one task per acting run whoever asked first, one timer heap for the
  waiting ones), `resync`: the periodic listing that keeps runs moving when kopf's watch
  goes silent;
- `actions`: the step kinds with outside effects (one module each, one table);
- `commands`: the entity command path (decide, call the handler, commit, retry, status);
- `runtime`: the connections (etcd, the fence, the API server, HTTP); `settings`: the
  operator's settings; `process`: the executor of one operator process.

kopf binds these to Kubernetes events in kurable.handlers; nothing here imports kopf.
"""

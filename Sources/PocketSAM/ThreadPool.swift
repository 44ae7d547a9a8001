#if canImport(Glibc)
import Glibc
#endif

/// A persistent pool of worker threads owned by one session. `run(_:_:)` hands out `count` block
/// indexes of a `ColumnTask`; the calling thread works too (slot 0; worker threads have slots 1 ..< size,
/// so a task can give each thread its own scratch). Nothing is allocated per call: the job is
/// a pointer to the caller's task description (no closure), valid for the duration of `run`, and
/// synchronisation is one mutex and two condition variables made at creation.
final class ThreadPool: @unchecked Sendable {
    let size: Int
    private var workers: [pthread_t] = []
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The current job, valid during `run`.
    private var job: UnsafePointer<ColumnTask>?
    private var generation = 0
    private var next = 0
    private var total = 0
    private var finished = 0
    private var stopping = false
    private var slotsTaken = 0

    /// `size` threads in all, the caller included (so `size - 1` workers).
    init(size: Int) {
        self.size = max(1, size)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(done, nil)
        for _ in 1..<self.size {
            var t = pthread_t()
            let me = Unmanaged.passUnretained(self).toOpaque()
            if pthread_create(&t, nil, { arg in
                Unmanaged<ThreadPool>.fromOpaque(arg!).takeUnretainedValue().workerLoop()
                return nil
            }, me) == 0 {
                workers.append(t)
            }
        }
    }

    deinit {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
        for t in workers { pthread_join(t, nil) }
        pthread_cond_destroy(wake)
        pthread_cond_destroy(done)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        wake.deallocate()
        done.deallocate()
    }

    /// Runs block `i` of `task` for every `i` in `0..<count`, spread over the pool; returns when all
    /// are done and no worker is still looking at the task.
    func run(_ count: Int, _ task: UnsafePointer<ColumnTask>) {
        if workers.isEmpty || count <= 1 {
            for i in 0..<count { task.pointee.run(block: i, slot: 0) }
            return
        }
        pthread_mutex_lock(mutex)
        job = task
        next = 0
        total = count
        finished = 0
        generation &+= 1
        let gen = generation
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
        drain(task, gen, slot: 0)
        pthread_mutex_lock(mutex)
        while finished < total || active > 0 { pthread_cond_wait(done, mutex) }
        job = nil
        pthread_mutex_unlock(mutex)
    }

    private var active = 0

    /// Takes block indexes of job `gen` until none are left.
    private func drain(_ b: UnsafePointer<ColumnTask>, _ gen: Int, slot: Int) {
        while true {
            pthread_mutex_lock(mutex)
            guard generation == gen, next < total else {
                pthread_mutex_unlock(mutex)
                return
            }
            let i = next
            next += 1
            pthread_mutex_unlock(mutex)
            b.pointee.run(block: i, slot: slot)
            pthread_mutex_lock(mutex)
            finished += 1
            if finished == total { pthread_cond_signal(done) }
            pthread_mutex_unlock(mutex)
        }
    }

    /// One job on a worker; its copy of the closure dies when this returns.
    @inline(never)
    private func work(_ gen: Int, slot: Int) {
        pthread_mutex_lock(mutex)
        guard generation == gen, let t = job else {
            pthread_mutex_unlock(mutex)
            return
        }
        pthread_mutex_unlock(mutex)
        drain(t, gen, slot: slot)
    }

    private func workerLoop() {
        var seen = 0
        pthread_mutex_lock(mutex)
        slotsTaken += 1
        let slot = slotsTaken
        while true {
            while generation == seen && !stopping { pthread_cond_wait(wake, mutex) }
            if stopping { break }
            seen = generation
            active += 1
            pthread_mutex_unlock(mutex)
            work(seen, slot: slot)
            pthread_mutex_lock(mutex)
            active -= 1
            if active == 0 { pthread_cond_signal(done) }
        }
        pthread_mutex_unlock(mutex)
    }
}

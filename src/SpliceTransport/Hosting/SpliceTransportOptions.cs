using System.Numerics;

namespace SpliceTransport;

/// <summary>
/// Options for SpliceTransport, set through <c>UseSpliceTransport(options =&gt; …)</c>. They are validated
/// when the server starts; an invalid value throws <see cref="ArgumentOutOfRangeException"/> naming the option.
/// </summary>
public sealed class SpliceTransportOptions
{
    /// <summary>Above this many loops the gains stop: each loop already serves thousands of connections.</summary>
    internal const int MaxDefaultThreadCount = 16;

    /// <summary>
    /// The most event loops allowed. A loop per hardware thread is the most that can help; more loops only
    /// compete for the same processors. 1024 is above the hardware-thread count of today's largest two-socket
    /// servers, so it limits no real deployment, while a mistaken value (a connection count typed into the
    /// wrong option) cannot start thousands of threads, each with its own stack, epoll instance, eventfd and,
    /// with <see cref="ReusePort"/>, its own listening socket per end point.
    /// </summary>
    internal const int MaxThreadCount = 1024;

    /// <summary>1 MiB, Kestrel's socket-transport default for what may wait unread in a connection's input.</summary>
    internal const long DefaultMaxReadBufferSize = 1024 * 1024;

    /// <summary>64 KiB, Kestrel's socket-transport default for what may wait unsent in a connection's output.</summary>
    internal const long DefaultMaxWriteBufferSize = 64 * 1024;

    /// <summary>
    /// The smallest buffer limit: one byte. Zero is refused rather than read as "no limit" (which is what a
    /// pause threshold of 0 means to System.IO.Pipelines): null already says "no limit", and a 0 could as well
    /// be taken for "no buffering". Kestrel's own <c>MaxRequestBufferSize</c> refuses 0 the same way.
    /// </summary>
    internal const long MinBufferSize = 1;

    /// <summary>
    /// 2 MiB per sendfile call: large enough that the call overhead vanishes, small enough that one download
    /// returns to the loop often (see <see cref="MaxSendFileChunkSize"/>).
    /// </summary>
    internal const long DefaultMaxSendFileChunkSize = 2 * 1024 * 1024;

    /// <summary>
    /// 0x7ffff000 (2,147,479,552) bytes, the most Linux transfers in one sendfile call (sendfile(2): "sendfile()
    /// will transfer at most 0x7ffff000 bytes", the kernel's MAX_RW_COUNT: INT_MAX rounded down to a page). A
    /// larger count would be shortened silently, so a larger chunk size could not mean what it says.
    /// </summary>
    internal const long MaxSendFileChunkSizeLimit = 0x7ffff000;

    /// <summary>Kestrel's default listen backlog.</summary>
    /// <summary>
    /// 30 s: longer than any handshake a reachable server needs (a few round trips, with SYN retransmits at 1 s
    /// and 3 s), much shorter than the kernel's own give-up (about 127 s).
    /// </summary>
    internal static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(30);

    internal const int DefaultBacklog = 512;

    /// <summary>
    /// Any positive int: listen(2) takes an int and the kernel silently lowers a larger backlog to
    /// <c>net.core.somaxconn</c> (4096 by default since Linux 5.4, 128 before), so no value is an error there and
    /// the real ceiling is the system's to set, as with Kestrel's socket transport.
    /// </summary>
    internal const int MaxBacklog = int.MaxValue;

    /// <summary>A thousand files: the static assets of a large site, for a thousand descriptors.</summary>
    internal const int DefaultOpenFileCacheSize = 1000;

    /// <summary>A million descriptors is past any descriptor limit a system sets by default.</summary>
    internal const int MaxOpenFileCacheSize = 1_000_000;

    /// <summary>One page: the smallest pipe the kernel makes.</summary>
    internal const int MinSplicePipeSize = 4096;

    /// <summary>1 GiB: far above any pipe-max-size a system sets, and still an int.</summary>
    internal const int MaxSplicePipeSize = 1024 * 1024 * 1024;

    /// <summary>
    /// The number of event-loop threads (<c>splice-loop-0</c> … <c>splice-loop-N-1</c>), from 1 to 1024.
    /// Default: the processor count, at most 16.
    /// </summary>
    public int ThreadCount { get; set; } = Math.Min(Environment.ProcessorCount, MaxDefaultThreadCount);

    /// <summary>
    /// Gives every loop its own listening socket with SO_REUSEPORT, so the kernel spreads new TCP connections
    /// over the loops with no hand-off between threads. When false, one acceptor hands connections out
    /// round-robin. Unix sockets always use one acceptor. Default: true.
    /// </summary>
    public bool ReusePort { get; set; } = true;

    /// <summary>Where Kestrel's request processing runs. Default: <see cref="SpliceTransport.ApplicationSchedulingMode.ThreadPool"/>.</summary>
    public ApplicationSchedulingMode ApplicationSchedulingMode { get; set; } = ApplicationSchedulingMode.ThreadPool;

    /// <summary>
    /// The most bytes received but not yet read by the application; above it the transport stops reading
    /// and TCP flow control slows the client. At least 1; null means no limit (0 is refused, not read as
    /// "no limit"). Default: 1 MiB.
    /// </summary>
    public long? MaxReadBufferSize { get; set; } = DefaultMaxReadBufferSize;

    /// <summary>
    /// The most bytes written by the application but not yet sent; above it the application's flushes wait.
    /// File bytes sent zero-copy do not count: they are never buffered. At least 1; null means no limit (0 is
    /// refused, not read as "no limit"). Default: 64 KiB.
    /// </summary>
    public long? MaxWriteBufferSize { get; set; } = DefaultMaxWriteBufferSize;

    /// <summary>Sets TCP_NODELAY on accepted TCP connections (Nagle off), as Kestrel does. Default: true.</summary>
    public bool NoDelay { get; set; } = true;

    /// <summary>
    /// The listen backlog: connections the kernel queues before they are accepted. At least 1; the kernel
    /// silently lowers a value above <c>net.core.somaxconn</c> to it. Default: 512.
    /// </summary>
    public int Backlog { get; set; } = DefaultBacklog;

    /// <summary>
    /// Sends file responses (<c>SendFileAsync</c>, so StaticFiles, <c>Results.File</c> with a path, …) with
    /// sendfile(2) where the connection allows it. Default: true.
    /// </summary>
    public bool ZeroCopyFiles { get; set; } = true;

    /// <summary>
    /// Splices request bodies that <c>SaveBodyToFileAsync</c> saves from the socket into the file (splice(2) through a
    /// kernel pipe) where the connection and the request allow it; false copies them through Kestrel's body reader,
    /// reported as <c>disabled</c>. Default: true.
    /// </summary>
    public bool ZeroCopyUploads { get; set; } = true;

    /// <summary>
    /// The most file bytes one sendfile call may send. Smaller values return to the event loop more often,
    /// so that one large download cannot delay the loop's other connections. From 1 to 0x7ffff000
    /// (2,147,479,552), the most Linux sends in one sendfile call. Default: 2 MiB.
    /// </summary>
    public long MaxSendFileChunkSize { get; set; } = DefaultMaxSendFileChunkSize;

    /// <summary>
    /// Before each sendfile chunk, asks the kernel (cachestat(2), Linux 6.5 and later) whether the chunk is in
    /// the page cache, and preadv2(RWF_NOWAIT) whether its first and last pages are already read (readahead
    /// inserts pages before their disk read ends); if not, reads the chunk into the cache first, on threads kept
    /// for that (at most 16, started on demand), not on the thread pool, whose workers serve requests: sendfile on a cold file would otherwise make the event loop, and every connection on it, wait for
    /// the disk. Costs up to three system calls per chunk (<see cref="MaxSendFileChunkSize"/>). Default: true.
    /// </summary>
    public bool PrefetchUncachedFiles { get; set; } = true;

    /// <summary>
    /// When a zero-copy file response has no Content-Type, sniffs one from the file's first 512 bytes as
    /// Go's net/http does (a subset of the WHATWG MIME sniffing standard). Those bytes then go through the
    /// normal path and the rest zero-copy. Default: false (StaticFiles sets Content-Type itself).
    /// </summary>
    public bool SniffContentType { get; set; }

    /// <summary>
    /// How long <c>SpliceConnectionFactory.ConnectAsync</c> waits for a TCP handshake before it gives up with a
    /// <see cref="System.Net.Sockets.SocketException"/> (TimedOut), or <see cref="Timeout.InfiniteTimeSpan"/> to
    /// wait as long as the kernel tries (about two minutes with the default tcp_syn_retries). A proxy whose
    /// upstream has vanished should tell its client sooner than that. From 1 ms to <see cref="int.MaxValue"/> ms.
    /// Default: 30 seconds.
    /// </summary>
    public TimeSpan ConnectTimeout { get; set; } = DefaultConnectTimeout;

    /// <summary>
    /// How many open file descriptors are kept for the next request for the same file (nginx's
    /// <c>open_file_cache</c>): a repeat costs one statx of the path instead of open, statx, fcntl and close. Every
    /// use checks that the path still names the version that was opened (device, inode, size, mtime, ctime), so a
    /// replaced or rewritten file is opened again; an unused descriptor is closed after 60 s. At most a quarter of
    /// the process's descriptor limit is used. From 0 (no cache) to 1,000,000. Default: 1,000.
    /// </summary>
    public int OpenFileCacheSize { get; set; } = DefaultOpenFileCacheSize;

    /// <summary>
    /// The capacity asked of each kernel pipe that splice(2) moves bytes through (forwarding, capture), in bytes:
    /// one pipe load is what one splice call moves, and the most a forwarded direction holds in flight. Lowered at
    /// run time to /proc/sys/fs/pipe-max-size (1 MiB by default), which an unprivileged process may not pass.
    /// From 4,096 (one page) to 1 GiB. Default: 1 MiB, as Go's runtime asks.
    /// </summary>
    public int SplicePipeSize { get; set; } = Splice.PipePool.DefaultPipeSize;

    /// <summary>
    /// The most empty pipes kept for the next splice rather than closed. Every pipe counts against the user's
    /// pipe pages (/proc/sys/fs/pipe-user-pages-soft, 64 MiB by default) whether it is used or not, so keep this
    /// small; a transfer that finds none makes one (pipe2 and fcntl). From 0 (none kept) to 4,096. Default: 16.
    /// </summary>
    public int MaxIdlePipes { get; set; } = Splice.PipePool.DefaultMaxPooled;

    /// <summary>
    /// The system calls of the data path. Tests replace them with a subclass that injects faults (EAGAIN
    /// storms, short writes, resets); everything else uses the real ones.
    /// </summary>
    internal Interop.Syscalls Syscalls { get; set; } = Interop.Syscalls.Default;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first invalid option and its value.</summary>
    internal void Validate()
    {
        ThrowIfOutOfRange(nameof(ThreadCount), ThreadCount, min: 1, MaxThreadCount);
        ThrowIfOutOfRange(nameof(MaxReadBufferSize), MaxReadBufferSize, MinBufferSize);
        ThrowIfOutOfRange(nameof(MaxWriteBufferSize), MaxWriteBufferSize, MinBufferSize);
        ThrowIfOutOfRange(nameof(MaxSendFileChunkSize), MaxSendFileChunkSize, min: 1, MaxSendFileChunkSizeLimit);
        ThrowIfOutOfRange(nameof(Backlog), Backlog, min: 1, MaxBacklog);
        ThrowIfOutOfRange(nameof(SplicePipeSize), SplicePipeSize, MinSplicePipeSize, MaxSplicePipeSize);
        ThrowIfOutOfRange(nameof(MaxIdlePipes), MaxIdlePipes, min: 0, Splice.PipePool.MaxPooledLimit);
        ThrowIfOutOfRange(nameof(OpenFileCacheSize), OpenFileCacheSize, min: 0, MaxOpenFileCacheSize);
        if (ConnectTimeout != Timeout.InfiniteTimeSpan && (ConnectTimeout < TimeSpan.FromMilliseconds(1) || ConnectTimeout > TimeSpan.FromMilliseconds(int.MaxValue)))
        {
            throw new ArgumentOutOfRangeException(nameof(ConnectTimeout), ConnectTimeout,
                $"{nameof(SpliceTransportOptions)}.{nameof(ConnectTimeout)} is {ConnectTimeout}; it must be from 1 ms to {int.MaxValue} ms, or Timeout.InfiniteTimeSpan.");
        }
        if (!Enum.IsDefined(ApplicationSchedulingMode))
        {
            throw new ArgumentOutOfRangeException(nameof(ApplicationSchedulingMode), ApplicationSchedulingMode,
                $"{nameof(SpliceTransportOptions)}.{nameof(ApplicationSchedulingMode)} is {(int)ApplicationSchedulingMode}, which is not a defined value.");
        }
    }

    private static void ThrowIfOutOfRange<T>(string option, T value, T min, T max) where T : struct, INumber<T>
    {
        if (value < min || value > max)
        {
            throw new ArgumentOutOfRangeException(option, value,
                $"{nameof(SpliceTransportOptions)}.{option} is {value}; it must be from {min} to {max}.");
        }
    }

    /// <summary>For the buffer limits: null means no limit, any other value must be at least <paramref name="min"/>.</summary>
    private static void ThrowIfOutOfRange(string option, long? value, long min)
    {
        if (value < min)
        {
            throw new ArgumentOutOfRangeException(option, value,
                $"{nameof(SpliceTransportOptions)}.{option} is {value}; it must be at least {min}, or null for no limit.");
        }
    }
}

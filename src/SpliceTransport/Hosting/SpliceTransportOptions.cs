namespace SpliceTransport;

/// <summary>
/// Options for SpliceTransport, set through <c>UseSpliceTransport(options =&gt; …)</c>. They are validated
/// when the server starts; an invalid value throws <see cref="ArgumentOutOfRangeException"/> naming the option.
/// </summary>
public sealed class SpliceTransportOptions
{
    /// <summary>Above this many loops the gains stop: each loop already serves thousands of connections.</summary>
    internal const int MaxDefaultThreadCount = 16;

    /// <summary>1 MiB, Kestrel's socket-transport default for what may wait unread in a connection's input.</summary>
    internal const long DefaultMaxReadBufferSize = 1024 * 1024;

    /// <summary>64 KiB, Kestrel's socket-transport default for what may wait unsent in a connection's output.</summary>
    internal const long DefaultMaxWriteBufferSize = 64 * 1024;

    /// <summary>
    /// 2 MiB per sendfile call: large enough that the call overhead vanishes, small enough that one download
    /// returns to the loop often (see <see cref="MaxSendFileChunkSize"/>).
    /// </summary>
    internal const long DefaultMaxSendFileChunkSize = 2 * 1024 * 1024;

    /// <summary>Kestrel's default listen backlog.</summary>
    internal const int DefaultBacklog = 512;

    /// <summary>
    /// The number of event-loop threads (<c>splice-loop-0</c> … <c>splice-loop-N-1</c>).
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
    /// and TCP flow control slows the client. Null means no limit. Default: 1 MiB.
    /// </summary>
    public long? MaxReadBufferSize { get; set; } = DefaultMaxReadBufferSize;

    /// <summary>
    /// The most bytes written by the application but not yet sent; above it the application's flushes wait.
    /// File bytes sent zero-copy do not count: they are never buffered. Null means no limit. Default: 64 KiB.
    /// </summary>
    public long? MaxWriteBufferSize { get; set; } = DefaultMaxWriteBufferSize;

    /// <summary>Sets TCP_NODELAY on accepted TCP connections (Nagle off), as Kestrel does. Default: true.</summary>
    public bool NoDelay { get; set; } = true;

    /// <summary>The listen backlog: connections the kernel queues before they are accepted. Default: 512.</summary>
    public int Backlog { get; set; } = DefaultBacklog;

    /// <summary>
    /// Sends file responses (<c>SendFileAsync</c>, so StaticFiles, <c>Results.File</c> with a path, …) with
    /// sendfile(2) where the connection allows it. Default: true.
    /// </summary>
    public bool ZeroCopyFiles { get; set; } = true;

    /// <summary>
    /// The most file bytes one sendfile call may send. Smaller values return to the event loop more often,
    /// so that one large download cannot delay the loop's other connections. Default: 2 MiB.
    /// </summary>
    public long MaxSendFileChunkSize { get; set; } = DefaultMaxSendFileChunkSize;

    /// <summary>
    /// When a zero-copy file response has no Content-Type, sniffs one from the file's first 512 bytes as
    /// Go's net/http does (a subset of the WHATWG MIME sniffing standard). Those bytes then go through the
    /// normal path and the rest zero-copy. Default: false (StaticFiles sets Content-Type itself).
    /// </summary>
    public bool SniffContentType { get; set; }

    /// <summary>
    /// The system calls of the data path. Tests replace them with a subclass that injects faults (EAGAIN
    /// storms, short writes, resets); everything else uses the real ones.
    /// </summary>
    internal Interop.Syscalls Syscalls { get; set; } = Interop.Syscalls.Default;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first invalid option.</summary>
    internal void Validate()
    {
        if (ThreadCount <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(ThreadCount), ThreadCount, $"{nameof(SpliceTransportOptions)}.{nameof(ThreadCount)} must be at least 1.");
        }
        if (MaxReadBufferSize < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxReadBufferSize), MaxReadBufferSize, $"{nameof(SpliceTransportOptions)}.{nameof(MaxReadBufferSize)} must be null (no limit) or not negative.");
        }
        if (MaxWriteBufferSize < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxWriteBufferSize), MaxWriteBufferSize, $"{nameof(SpliceTransportOptions)}.{nameof(MaxWriteBufferSize)} must be null (no limit) or not negative.");
        }
        if (MaxSendFileChunkSize <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxSendFileChunkSize), MaxSendFileChunkSize, $"{nameof(SpliceTransportOptions)}.{nameof(MaxSendFileChunkSize)} must be at least 1.");
        }
        if (Backlog <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(Backlog), Backlog, $"{nameof(SpliceTransportOptions)}.{nameof(Backlog)} must be at least 1.");
        }
        if (!Enum.IsDefined(ApplicationSchedulingMode))
        {
            throw new ArgumentOutOfRangeException(nameof(ApplicationSchedulingMode), ApplicationSchedulingMode, $"{nameof(SpliceTransportOptions)}.{nameof(ApplicationSchedulingMode)} is not a defined value.");
        }
    }
}

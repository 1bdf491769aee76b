using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using Microsoft.Extensions.Logging;
using SpliceTransport.Engine;
using SpliceTransport.Interop;
using SpliceTransport.Splice;
using SpliceTransport.Files;

namespace SpliceTransport.Transport;

/// <summary>What every connection of one factory shares: options, loops, pool, scheduler, logger, metrics.</summary>
internal sealed class SpliceTransportContext : IDisposable
{
    public SpliceTransportContext(SpliceTransportOptions options, EventLoopGroup loops, MemoryPool<byte> memoryPool, ILogger logger, SpliceMetrics metrics)
    {
        Options = options;
        Loops = loops;
        MemoryPool = memoryPool;
        Logger = logger;
        Metrics = metrics;
        Syscalls = options.Syscalls;
        DiskThreads = new DiskThreads();
        Residency = new FileResidency(options.PrefetchUncachedFiles, options.Syscalls, DiskThreads, metrics, logger);
        Pipes = new PipePool(metrics, options.Syscalls, options.SplicePipeSize, options.MaxIdlePipes);
        Files = new OpenFileCache(options.OpenFileCacheSize, OpenFileCache.DefaultInactive, options.Syscalls);
        ApplicationScheduler = options.ApplicationSchedulingMode == ApplicationSchedulingMode.Inline
            ? PipeScheduler.Inline
            : PipeScheduler.ThreadPool;

        // PipeOptions are immutable and depend only on the loop, so each loop's pair is made once here rather
        // than per connection (two objects fewer for every idle connection to hold).
        long maxRead = options.MaxReadBufferSize ?? 0;
        long maxWrite = options.MaxWriteBufferSize ?? 0;
        int minimumSegmentSize = memoryPool.MaxBufferSize is > 0 and < DefaultMinimumSegmentSize ? memoryPool.MaxBufferSize : DefaultMinimumSegmentSize;
        var inputPool = new InputMemoryPool(memoryPool);
        _inputOptions = new PipeOptions[loops.Loops.Count];
        _outputOptions = new PipeOptions[loops.Loops.Count];
        foreach (EventLoop loop in loops.Loops)
        {
            _inputOptions[loop.Index] = new PipeOptions(inputPool, readerScheduler: ApplicationScheduler, writerScheduler: loop,
                pauseWriterThreshold: maxRead, resumeWriterThreshold: maxRead / 2, minimumSegmentSize: minimumSegmentSize, useSynchronizationContext: false);
            // The send pump continues on the thread that flushed, once that thread has finished what it is doing
            // (see SendScheduler); it moves to the loop thread only when it must wait for the socket to drain.
            _outputOptions[loop.Index] = new PipeOptions(memoryPool, readerScheduler: loop.SendScheduler, writerScheduler: ApplicationScheduler,
                pauseWriterThreshold: maxWrite, resumeWriterThreshold: maxWrite / 2, minimumSegmentSize: minimumSegmentSize, useSynchronizationContext: false);
        }
    }

    /// <summary>
    /// The socket options every connection gets, accepted or connected: TCP_NODELAY on TCP sockets when
    /// <see cref="SpliceTransportOptions.NoDelay"/> (a small write leaves at once, as in Kestrel). Only ever set,
    /// never cleared: with NoDelay false the socket keeps the kernel's default (Nagle on).
    /// </summary>
    public void ApplyConnectionOptions(FileDescriptorHandle socket, EndPoint endPoint)
    {
        if (endPoint is IPEndPoint && Options.NoDelay)
        {
            Syscalls.SetOption(socket, LibC.IPPROTO_TCP, LibC.TCP_NODELAY, 1).CountOrThrow("setsockopt", "TCP_NODELAY");
        }
    }

    /// <summary>A pool block: the most one recv fills in the common case, and Kestrel's own segment size.</summary>
    private const int DefaultMinimumSegmentSize = 4096;

    private readonly PipeOptions[] _inputOptions;
    private readonly PipeOptions[] _outputOptions;

    /// <summary>The options of the input pipe (socket → Kestrel) of a connection on <paramref name="loop"/>.</summary>
    public PipeOptions InputOptions(EventLoop loop) => _inputOptions[loop.Index];

    /// <summary>The options of the output pipe (Kestrel → socket) of a connection on <paramref name="loop"/>.</summary>
    public PipeOptions OutputOptions(EventLoop loop) => _outputOptions[loop.Index];

    public SpliceTransportOptions Options { get; }

    public EventLoopGroup Loops { get; }

    public MemoryPool<byte> MemoryPool { get; }

    public ILogger Logger { get; }

    public SpliceMetrics Metrics { get; }

    /// <summary>The system calls of the data path: the real ones, or a test's fault injector.</summary>
    public Interop.Syscalls Syscalls { get; }

    /// <summary>The page-cache probe and the off-loop reads of cold file chunks.</summary>
    public FileResidency Residency { get; }

    /// <summary>The threads that wait on disks, so that no loop and no pool worker does.</summary>
    public DiskThreads DiskThreads { get; }

    /// <summary>The kernel pipes every splice of the transport borrows (forwarding, capture).</summary>
    public PipePool Pipes { get; }

    /// <summary>The open descriptors of files served zero-copy, kept for the next request.</summary>
    public OpenFileCache Files { get; }

    /// <summary>
    /// Stops what the transport owns, in order: the loops (Kestrel has closed every connection by then), the
    /// disk threads once their queued work is done, the idle pipes, the cached files, the memory pool.
    /// </summary>
    public void Dispose()
    {
        Loops.Dispose();
        DiskThreads.Dispose();
        Pipes.Dispose();
        Files.Dispose();
        MemoryPool.Dispose();
    }

    /// <summary>Where application code continues: Kestrel's reads of the input and its flush resumptions.</summary>
    public PipeScheduler ApplicationScheduler { get; }
}

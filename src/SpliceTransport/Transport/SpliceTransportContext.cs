using System.Buffers;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using SpliceTransport.Engine;

namespace SpliceTransport.Transport;

/// <summary>What every connection of one factory shares: options, loops, pool, scheduler, logger, metrics.</summary>
internal sealed class SpliceTransportContext
{
    public SpliceTransportContext(SpliceTransportOptions options, EventLoopGroup loops, MemoryPool<byte> memoryPool, ILogger logger, SpliceMetrics metrics)
    {
        Options = options;
        Loops = loops;
        MemoryPool = memoryPool;
        Logger = logger;
        Metrics = metrics;
        Syscalls = options.Syscalls;
        ApplicationScheduler = options.ApplicationSchedulingMode == ApplicationSchedulingMode.Inline
            ? PipeScheduler.Inline
            : PipeScheduler.ThreadPool;
    }

    public SpliceTransportOptions Options { get; }

    public EventLoopGroup Loops { get; }

    public MemoryPool<byte> MemoryPool { get; }

    public ILogger Logger { get; }

    public SpliceMetrics Metrics { get; }

    /// <summary>The system calls of the data path: the real ones, or a test's fault injector.</summary>
    public Interop.Syscalls Syscalls { get; }

    /// <summary>Where application code continues: Kestrel's reads of the input and its flush resumptions.</summary>
    public PipeScheduler ApplicationScheduler { get; }
}

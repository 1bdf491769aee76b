using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SpliceTransport.Engine;
using SpliceTransport.Transport;

namespace SpliceTransport;

/// <summary>
/// Kestrel's entry to SpliceTransport: binds TCP (IPv4, IPv6, dual-mode), Unix-socket and inherited
/// (systemd) end points on the transport's event loops. Registered by <c>UseSpliceTransport()</c> after
/// Kestrel's socket transport, so Kestrel asks it first; for an end point it cannot serve,
/// <see cref="CanBind"/> says so and Kestrel falls back to its socket transport.
/// </summary>
internal sealed class SpliceConnectionListenerFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector, IDisposable
{
    private readonly SpliceTransportOptions _options;
    private readonly ILogger _logger;
    private readonly SpliceMetrics _metrics;
    private readonly IMemoryPoolFactory<byte>? _memoryPoolFactory;
    private readonly Lock _startLock = new();
    private SpliceTransportContext? _context;
    private bool _disposed;

    /// <summary>Creates the factory and validates <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range; the exception names it.</exception>
    public SpliceConnectionListenerFactory(
        IOptions<SpliceTransportOptions> options,
        ILoggerFactory loggerFactory,
        SpliceMetrics metrics,
        IEnumerable<IMemoryPoolFactory<byte>> memoryPoolFactories)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        _options = options.Value;
        _options.Validate();
        _logger = loggerFactory.CreateLogger("SpliceTransport");
        _metrics = metrics;
        _memoryPoolFactory = memoryPoolFactories.LastOrDefault();
    }

    /// <inheritdoc />
    public async ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (!CanBind(endpoint))
        {
            throw new NotSupportedException($"SpliceTransport cannot bind end point '{endpoint}' of type {endpoint.GetType().Name}.");
        }
        var listener = new SpliceConnectionListener(endpoint, EnsureStarted());
        await listener.BindAsync().ConfigureAwait(false);
        return listener;
    }

    /// <inheritdoc />
    public bool CanBind(EndPoint endpoint) => endpoint switch
    {
        IPEndPoint ip => ip.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6,
        UnixDomainSocketEndPoint => true,
        FileHandleEndPoint => true,
        _ => false,
    };

    /// <summary>The loops and everything connections share, started on first use (a bind or an outbound connect).</summary>
    internal SpliceTransportContext Context => EnsureStarted();

    private SpliceTransportContext EnsureStarted()
    {
        lock (_startLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_context is null)
            {
                MemoryPool<byte> pool = _memoryPoolFactory?.Create() ?? new PinnedMemoryPool();
                _context = new SpliceTransportContext(_options, new EventLoopGroup(_options.ThreadCount, _logger, _options.Syscalls), pool, _logger, _metrics);
            }
            return _context;
        }
    }

    /// <summary>Stops the event loops. Kestrel has closed every connection by the time the host disposes this.</summary>
    public void Dispose()
    {
        lock (_startLock)
        {
            _disposed = true;
            _context?.Dispose();
        }
    }
}

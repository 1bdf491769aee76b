using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using SpliceTransport;

namespace TcpProxy;

/// <summary>The proxy, built from command-line arguments (public so that tests can start it in-process).</summary>
public static partial class ProxyApp
{
    private const string UnixPrefix = "unix:";

    /// <summary>
    /// Builds the proxy; throws <see cref="ArgumentException"/> naming a missing or malformed argument.
    /// <paramref name="configure"/> runs last, before the build (tests add their log collector there).
    /// </summary>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder(args);
        EndPoint listen = ParseEndPoint("--listen", builder.Configuration["listen"] ?? "127.0.0.1:8080");
        EndPoint upstream = ParseEndPoint("--upstream", builder.Configuration["upstream"]
            ?? throw new ArgumentException("--upstream is required: where to forward each connection (ADDRESS:PORT, HOST:PORT or unix:/path)."));
        string transport = builder.Configuration["transport"] ?? "splice";
        if (transport is not ("splice" or "sockets"))
        {
            throw new ArgumentException($"--transport must be 'splice' or 'sockets', not '{transport}'.");
        }
        string? captureValue = builder.Configuration["capture"];
        if (captureValue is not null && transport == "sockets")
        {
            // Checked before the directory, so that a rejected command line creates nothing.
            throw new ArgumentException($"--capture '{captureValue}' needs --transport splice: captures tee through SpliceTransport's kernel pipes, which Kestrel's socket transport does not have.");
        }
        string? capture = captureValue is null ? null : ParseCaptureDirectory("--capture", captureValue);
        if (transport == "splice")
        {
            builder.WebHost.UseSpliceTransport(options => builder.Configuration.GetSection("SpliceTransport").Bind(options));
        }
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(listen, listenOptions =>
            listenOptions.Run(client => ForwardAsync(kestrel.ApplicationServices, client, upstream, capture))));
        configure?.Invoke(builder);
        return builder.Build();
    }

    private static async Task ForwardAsync(IServiceProvider services, ConnectionContext client, EndPoint upstreamEndPoint, string? captureDirectory)
    {
        ILogger logger = services.GetRequiredService<ILoggerFactory>().CreateLogger("TcpProxy");
        CancellationToken stopping = services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;
        ConnectionContext upstream;
        try
        {
            upstream = await ConnectAsync(services, upstreamEndPoint, client, stopping);
        }
        catch (SocketException ex)
        {
            // Returning ends the client's connection at once: it learns that the upstream is down.
            LogUpstreamUnavailable(logger, client.ConnectionId, client.RemoteEndPoint, upstreamEndPoint, ex.Message);
            return;
        }
        await using (upstream)
        {
            ForwardOptions? options = null;
            if (captureDirectory is not null)
            {
                string name = SafeFileName(client.ConnectionId);
                options = new ForwardOptions
                {
                    OutboundCapturePath = Path.Combine(captureDirectory, name + ".c2s"),
                    InboundCapturePath = Path.Combine(captureDirectory, name + ".s2c"),
                };
            }
            try
            {
                ForwardResult result = await client.ForwardAsync(upstream, options, stopping);
                ForwardDirectionResult outbound = result.Outbound, inbound = result.Inbound;
                if (options is null)
                {
                    LogForwarded(logger, client.ConnectionId, client.RemoteEndPoint, outbound.Bytes, inbound.Bytes,
                        outbound.SplicedBytes + inbound.SplicedBytes, outbound.End, inbound.End);
                }
                else
                {
                    LogForwardedAndCaptured(logger, client.ConnectionId, client.RemoteEndPoint, outbound.Bytes, inbound.Bytes,
                        outbound.SplicedBytes + inbound.SplicedBytes, outbound.End, inbound.End,
                        outbound.CapturedBytes, outbound.CaptureDroppedBytes, options.OutboundCapturePath!,
                        inbound.CapturedBytes, inbound.CaptureDroppedBytes, options.InboundCapturePath!);
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                LogStopped(logger, client.ConnectionId);
            }
            catch (Exception ex) when (options is not null && ex is IOException or UnauthorizedAccessException)
            {
                // A capture file that cannot be created (the directory was removed or made read-only since startup): nothing
                // was forwarded, and returning closes both connections. Or its gap list could not be written, after
                // the forward: the counts are lost, the connection is over all the same.
                LogCaptureFailed(logger, client.ConnectionId, client.RemoteEndPoint, captureDirectory!, ex.Message);
            }
        }
    }

    /// <summary>On SpliceTransport, on the client's event loop; otherwise a socket wrapped by Kestrel's socket transport.</summary>
    private static async Task<ConnectionContext> ConnectAsync(IServiceProvider services, EndPoint upstream, ConnectionContext client, CancellationToken cancellationToken)
    {
        if (services.GetService<SpliceConnectionFactory>() is { } factory)
        {
            return await factory.ConnectPairedAsync(upstream, client, cancellationToken);
        }
        var socket = upstream is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await socket.ConnectAsync(upstream, cancellationToken);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new SocketConnectionContextFactory(new SocketConnectionFactoryOptions(), services.GetRequiredService<ILoggerFactory>().CreateLogger("TcpProxy.Upstream")).Create(socket);
    }

    /// <summary>
    /// The directory of <c>--capture</c>, as a full path: an existing directory, or one created in an existing
    /// parent (only the last level, so that a mistyped path fails here rather than capturing somewhere unexpected).
    /// A file is created and removed in it, so that a directory the proxy cannot write to fails at startup too.
    /// </summary>
    internal static string ParseCaptureDirectory(string option, string value)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            throw new ArgumentException($"{option} '{value}' is not a directory: give the directory to write the captures into.");
        }
        string directory = Path.TrimEndingDirectorySeparator(Path.GetFullPath(value));
        if (File.Exists(directory))
        {
            throw new ArgumentException($"{option} '{value}' is a file, not a directory.");
        }
        if (!Directory.Exists(directory))
        {
            string? parent = Path.GetDirectoryName(directory);
            if (parent is null || !Directory.Exists(parent))
            {
                throw new ArgumentException($"{option} '{value}' does not exist, nor does its parent directory '{parent}' (only the last level is created).");
            }
        }
        try
        {
            Directory.CreateDirectory(directory);
            using (File.OpenHandle(Path.Combine(directory, $".tcpproxy-probe-{Guid.NewGuid():N}"), FileMode.CreateNew, FileAccess.Write, FileShare.None, FileOptions.DeleteOnClose))
            {
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"{option} '{value}' cannot be written to: {ex.Message}", ex);
        }
        return directory;
    }

    /// <summary>
    /// A connection id as a file name. Kestrel's and SpliceTransport's ids are letters and digits; anything else
    /// (a path separator, a dot that could make "..", a control character from another transport) becomes '_'.
    /// </summary>
    internal static string SafeFileName(string connectionId)
    {
        if (string.IsNullOrEmpty(connectionId))
        {
            return "connection";
        }
        return string.Create(connectionId.Length, connectionId, static (span, id) =>
        {
            for (int i = 0; i < id.Length; i++)
            {
                span[i] = char.IsAsciiLetterOrDigit(id[i]) || id[i] is '-' or '_' ? id[i] : '_';
            }
        });
    }

    /// <summary>ADDRESS:PORT ([::1]:PORT for IPv6), HOST:PORT, or unix:/path.</summary>
    internal static EndPoint ParseEndPoint(string option, string value)
    {
        if (value.StartsWith(UnixPrefix, StringComparison.Ordinal))
        {
            return new UnixDomainSocketEndPoint(value[UnixPrefix.Length..]);
        }
        if (IPEndPoint.TryParse(value, out IPEndPoint? ip))
        {
            // Port 0 means "any free port" to a listener (tests use it), and nothing to connect to.
            return ip.Port != 0 || option == "--listen" ? ip : throw new ArgumentException($"{option} '{value}' has no port.");
        }
        int colon = value.LastIndexOf(':');
        if (colon > 0 && int.TryParse(value.AsSpan(colon + 1), out int port) && port is > 0 and <= IPEndPoint.MaxPort)
        {
            return new DnsEndPoint(value[..colon], port);
        }
        throw new ArgumentException($"{option} '{value}' is not ADDRESS:PORT, HOST:PORT or unix:/path.");
    }

    [LoggerMessage(1, LogLevel.Information, "Connection {ConnectionId} from {Client}: {Outbound} bytes to the upstream, {Inbound} bytes back ({Spliced} spliced); ended {OutboundEnd}/{InboundEnd}.")]
    private static partial void LogForwarded(ILogger logger, string connectionId, EndPoint? client, long outbound, long inbound, long spliced, ForwardEnd outboundEnd, ForwardEnd inboundEnd);

    [LoggerMessage(2, LogLevel.Warning, "Connection {ConnectionId} from {Client}: upstream {Upstream} unavailable ({Error}); client closed.")]
    private static partial void LogUpstreamUnavailable(ILogger logger, string connectionId, EndPoint? client, EndPoint upstream, string error);

    [LoggerMessage(3, LogLevel.Information, "Connection {ConnectionId}: forwarding stopped, the proxy is shutting down.")]
    private static partial void LogStopped(ILogger logger, string connectionId);

    /// <summary>Line 1 with what each capture kept and dropped (the dropped ranges are in PATH.gaps), for a --capture run.</summary>
    [LoggerMessage(4, LogLevel.Information, "Connection {ConnectionId} from {Client}: {Outbound} bytes to the upstream, {Inbound} bytes back ({Spliced} spliced); ended {OutboundEnd}/{InboundEnd}; captured {OutboundCaptured} bytes to the upstream ({OutboundDropped} dropped) in {OutboundCapture}, {InboundCaptured} bytes back ({InboundDropped} dropped) in {InboundCapture}.")]
    private static partial void LogForwardedAndCaptured(ILogger logger, string connectionId, EndPoint? client, long outbound, long inbound, long spliced, ForwardEnd outboundEnd, ForwardEnd inboundEnd,
        long outboundCaptured, long outboundDropped, string outboundCapture, long inboundCaptured, long inboundDropped, string inboundCapture);

    [LoggerMessage(5, LogLevel.Warning, "Connection {ConnectionId} from {Client}: capture into {Directory} failed ({Error}); connection closed.")]
    private static partial void LogCaptureFailed(ILogger logger, string connectionId, EndPoint? client, string directory, string error);
}

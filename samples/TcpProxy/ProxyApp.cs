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
        switch (transport)
        {
            case "splice":
                builder.WebHost.UseSpliceTransport(options => builder.Configuration.GetSection("SpliceTransport").Bind(options));
                break;
            case "sockets":
                break;
            default:
                throw new ArgumentException($"--transport must be 'splice' or 'sockets', not '{transport}'.");
        }
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(listen, listenOptions =>
            listenOptions.Run(client => ForwardAsync(kestrel.ApplicationServices, client, upstream))));
        configure?.Invoke(builder);
        return builder.Build();
    }

    private static async Task ForwardAsync(IServiceProvider services, ConnectionContext client, EndPoint upstreamEndPoint)
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
            try
            {
                ForwardResult result = await client.ForwardAsync(upstream, stopping);
                LogForwarded(logger, client.ConnectionId, client.RemoteEndPoint, result.Outbound.Bytes, result.Inbound.Bytes,
                    result.Outbound.SplicedBytes + result.Inbound.SplicedBytes, result.Outbound.End, result.Inbound.End);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                LogStopped(logger, client.ConnectionId);
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
}

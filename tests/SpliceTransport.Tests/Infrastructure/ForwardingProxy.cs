using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using SpliceTransport.Transport;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>
/// A proxy for forwarding tests: Kestrel listening on loopback, each connection forwarded to an upstream. On
/// SpliceTransport the upstream comes from <see cref="SpliceConnectionFactory.ConnectPairedAsync"/> (the client's
/// loop); on Kestrel's socket transport from <see cref="SocketConnectionContextFactory"/>. The first connection's
/// result is kept, and, with a seam, the logs of its two sockets.
/// </summary>
internal sealed class ForwardingProxy : IAsyncDisposable
{
    private readonly SpliceTestHost _host;
    private readonly TaskCompletionSource<(FaultInjectingSyscalls.SocketLog Client, FaultInjectingSyscalls.SocketLog Upstream)> _sockets = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private ForwardingProxy(SpliceTestHost host, Task<ForwardResult> result, TaskCompletionSource<(FaultInjectingSyscalls.SocketLog, FaultInjectingSyscalls.SocketLog)> sockets)
    {
        _host = host;
        Result = result;
        _sockets = sockets;
    }

    /// <summary>The first forwarded connection's result, or its exception.</summary>
    public Task<ForwardResult> Result { get; }

    public IPEndPoint EndPoint => new(IPAddress.Loopback, _host.Port);

    public MetricsRecorder Metrics => _host.Metrics;

    public IServiceProvider Services => _host.Services;

    /// <summary>The seam's logs of the first pair's client and upstream sockets (SpliceTransport with a seam only).</summary>
    public Task<(FaultInjectingSyscalls.SocketLog Client, FaultInjectingSyscalls.SocketLog Upstream)> Sockets => _sockets.Task;

    /// <param name="useSplice">SpliceTransport, or Kestrel's socket transport.</param>
    /// <param name="upstream">Where each connection is forwarded.</param>
    /// <param name="seam">The system calls, counted and with faults (SpliceTransport only).</param>
    /// <param name="configureTransport">More transport options.</param>
    /// <param name="forward">What to do with a pair; by default <c>ForwardAsync</c> with <paramref name="options"/>.</param>
    /// <param name="options">The forward's options, for the default <paramref name="forward"/>.</param>
    /// <param name="delayBeforeConnect">A pause before the upstream connection, so that the client's first bytes wait in the transport.</param>
    /// <param name="configureListen">Connection middleware ahead of the forward (HTTPS, say).</param>
    public static async Task<ForwardingProxy> StartAsync(
        bool useSplice,
        IPEndPoint upstream,
        FaultInjectingSyscalls? seam = null,
        Action<SpliceTransportOptions>? configureTransport = null,
        Func<ConnectionContext, ConnectionContext, Task<ForwardResult>>? forward = null,
        ForwardOptions? options = null,
        TimeSpan? delayBeforeConnect = null,
        Action<Microsoft.AspNetCore.Server.Kestrel.Core.ListenOptions>? configureListen = null)
    {
        var result = new TaskCompletionSource<ForwardResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var sockets = new TaskCompletionSource<(FaultInjectingSyscalls.SocketLog, FaultInjectingSyscalls.SocketLog)>(TaskCreationOptions.RunContinuationsAsynchronously);
        forward ??= (client, server) => client.ForwardAsync(server, options);
        SpliceTestHost host = await SpliceTestHost.StartAsync(
            _ => { },
            configureTransport: transport =>
            {
                if (seam is not null)
                {
                    transport.Syscalls = seam;
                }
                configureTransport?.Invoke(transport);
            },
            useSplice: useSplice,
            configureBuilder: builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen =>
            {
                configureListen?.Invoke(listen);
                listen.Run(async client =>
            {
                try
                {
                    if (delayBeforeConnect is { } delay)
                    {
                        await Task.Delay(delay);
                    }
                    await using ConnectionContext server = await ConnectAsync(kestrel.ApplicationServices, upstream, client);
                    if (seam is not null && client.Features.Get<ISocketHandoffFeature>() is { } clientSocket && server.Features.Get<ISocketHandoffFeature>() is { } serverSocket)
                    {
                        sockets.TrySetResult((seam.For(clientSocket.Socket), seam.For(serverSocket.Socket)));
                    }
                    result.TrySetResult(await forward(client, server));
                }
                catch (Exception ex)
                {
                    result.TrySetException(ex);
                }
            });
            })));
        return new ForwardingProxy(host, result.Task, sockets);
    }

    private static async Task<ConnectionContext> ConnectAsync(IServiceProvider services, IPEndPoint upstream, ConnectionContext client)
    {
        if (services.GetService<SpliceConnectionFactory>() is { } splice)
        {
            ConnectionContext server = await splice.ConnectPairedAsync(upstream, client);
            Assert.Equal(client.Features.Get<ISpliceConnectionFeature>()!.EventLoopIndex, server.Features.Get<ISpliceConnectionFeature>()!.EventLoopIndex);
            return server;
        }
        var socket = new Socket(upstream.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(upstream);
        return new SocketConnectionContextFactory(new SocketConnectionFactoryOptions(), NullLogger.Instance).Create(socket);
    }

    public ValueTask DisposeAsync() => _host.DisposeAsync();
}

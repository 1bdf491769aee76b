using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.Extensions.DependencyInjection;
using SpliceTransport.Interop;
using SpliceTransport.Splice;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Splice;

/// <summary>A pool's own meter (its own IMeterFactory), so parallel tests do not see each other's pipes.</summary>
internal sealed class PoolMetrics : IDisposable
{
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();

    public PoolMetrics()
    {
        Recorder = new MetricsRecorder(_services);
        Metrics = new SpliceMetrics(_services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>());
    }

    public SpliceMetrics Metrics { get; }

    public MetricsRecorder Recorder { get; }

    public long Used => Recorder.Total(SpliceMetrics.PipeCountName, SpliceMetrics.PipeStateTag, SpliceMetrics.PipeStateUsed);

    public long Idle => Recorder.Total(SpliceMetrics.PipeCountName, SpliceMetrics.PipeStateTag, SpliceMetrics.PipeStateIdle);

    public long Refused(string reason) => Recorder.Total(SpliceMetrics.PipeRefusedName, SpliceMetrics.PipeRefusedReasonTag, reason);

    public long AllRefused => Recorder.Total(SpliceMetrics.PipeRefusedName);

    public PipePool CreatePool(Syscalls? syscalls = null, int pipeSize = PipePool.DefaultPipeSize, int maxPooled = PipePool.DefaultMaxPooled, int? maxPipeSize = null) =>
        new(Metrics, syscalls, pipeSize, maxPooled, maxPipeSize);

    public void Dispose()
    {
        Recorder.Dispose();
        _services.Dispose();
    }
}

/// <summary>
/// A connected loopback TCP pair: <see cref="Local"/> is non-blocking, the end the tests splice (as a loop
/// would); <see cref="Remote"/> is an ordinary blocking socket, the peer, driven from another thread.
/// </summary>
internal sealed class LoopbackPair : IDisposable
{
    private LoopbackPair(Socket local, Socket remote)
    {
        Local = local;
        Remote = remote;
    }

    public Socket Local { get; }

    public Socket Remote { get; }

    public SafeHandle Handle => Local.SafeHandle;

    public static LoopbackPair Create(int? localSendBuffer = null, int? remoteReceiveBuffer = null)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var remote = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        if (remoteReceiveBuffer is int receive)
        {
            remote.ReceiveBufferSize = receive; // Before connecting, so the window is negotiated small.
        }
        remote.Connect(listener.LocalEndPoint!);
        Socket local = listener.Accept();
        local.Blocking = false;
        if (localSendBuffer is int send)
        {
            local.SendBufferSize = send;
        }
        return new LoopbackPair(local, remote);
    }

    /// <summary>Sends <paramref name="count"/> seeded pseudo-random bytes from the peer, then its FIN; returns their SHA-256.</summary>
    public Task<string> SendFromRemoteAsync(long count, int seed) => Task.Run(() =>
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var random = new Random(seed);
        byte[] chunk = new byte[256 * 1024];
        for (long sent = 0; sent < count;)
        {
            int n = (int)Math.Min(chunk.Length, count - sent);
            random.NextBytes(chunk.AsSpan(0, n));
            hash.AppendData(chunk, 0, n);
            Remote.Send(chunk, 0, n, SocketFlags.None);
            sent += n;
        }
        Remote.Shutdown(SocketShutdown.Send);
        return Convert.ToHexString(hash.GetHashAndReset());
    });

    /// <summary>Reads the peer's side to the FIN; returns the SHA-256 of what arrived and its length.</summary>
    public Task<(string Sha256, long Length)> ReceiveAtRemoteAsync() => Task.Run(() =>
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] buffer = new byte[256 * 1024];
        long total = 0;
        int n;
        while ((n = Remote.Receive(buffer)) > 0)
        {
            hash.AppendData(buffer, 0, n);
            total += n;
        }
        return (Convert.ToHexString(hash.GetHashAndReset()), total);
    });

    /// <summary>Waits until the non-blocking end is readable (data, FIN or error) or writable, as a loop's edge would say.</summary>
    public void Wait(SelectMode mode)
    {
        if (!Local.Poll(TimeSpan.FromSeconds(30), mode))
        {
            throw new TimeoutException($"The socket did not become {mode} within 30 s.");
        }
    }

    public void Dispose()
    {
        Local.Dispose();
        Remote.Dispose();
    }
}

internal static partial class Kernel
{
    private const nuint FIONREAD = 0x541B;

    /// <summary>
    /// The capabilities this process holds (CapEff of /proc/self/status): CAP_SYS_RESOURCE lets F_SETPIPE_SZ go
    /// past pipe-max-size.
    /// </summary>
    public static bool HasSysResource()
    {
        const int CapSysResource = 24;
        string line = File.ReadLines("/proc/self/status").First(l => l.StartsWith("CapEff:", StringComparison.Ordinal));
        ulong effective = Convert.ToUInt64(line["CapEff:".Length..].Trim(), 16);
        return (effective & (1UL << CapSysResource)) != 0;
    }

    /// <summary>The bytes the kernel says a pipe holds (FIONREAD): the oracle for <see cref="SplicePipe.Buffered"/>.</summary>
    public static int BytesInPipe(SplicePipe pipe)
    {
        Assert.Equal(0, ioctl(pipe.ReadEnd, FIONREAD, out int count));
        return count;
    }

    /// <summary>What /proc/self/fd/N points to ("pipe:[inode]"), or null when the descriptor is not open.</summary>
    public static string? DescriptorTarget(int fd)
    {
        try
        {
            return File.ResolveLinkTarget($"/proc/self/fd/{fd}", returnFinalTarget: false)?.FullName is string target
                ? Path.GetFileName(target)
                : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>open(2) with raw flags (O_APPEND is what the tests need, and FileStream never sets it).</summary>
    public static FileDescriptorHandle Open(string path, int flags)
    {
        int fd = LibC.open(path, flags | LibC.O_CLOEXEC);
        Assert.True(fd >= 0, $"open {path} failed: {Errno.Name(Marshal.GetLastPInvokeError())}");
        return new FileDescriptorHandle(fd);
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int ioctl(SafeHandle fd, nuint request, out int value);
}

using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using SpliceTransport.Interop;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>
/// The data path's system calls with faults injected and outcomes counted, installed per host with
/// <c>UseSpliceTransport(o =&gt; o.Syscalls = injector)</c>. Every call goes to the real one unless a fault
/// says otherwise, and is counted in total and per socket (<see cref="SocketLog"/>, keyed by the connection's
/// handle object, so a reused descriptor number never mixes two connections).
///
/// What it can fake, and what it must not: short writes (<see cref="MaxSendMessageBytes"/>,
/// <see cref="MaxSendFileBytes"/>) and errors returned instead of the call (<see cref="AcceptFault"/>,
/// <see cref="SendFileFault"/>, <see cref="SendMessageFault"/>, <see cref="ReceiveFault"/>, <see cref="SetOptionFault"/>,
/// <see cref="ReadFileFault"/>). Not short reads and not EAGAIN: the pumps take
/// both to mean "wait for the next epoll edge", which a socket that is not really empty or full never raises.
/// Real EAGAIN is counted instead (<see cref="SendFileWouldBlock"/>, <see cref="SendMessageWouldBlock"/>).
/// </summary>
internal sealed unsafe class FaultInjectingSyscalls : Syscalls
{
    /// <summary>What one connection's socket saw through the seam.</summary>
    public sealed class SocketLog
    {
        private int _receiveCalls;
        private int _sendMessageCalls;
        private int _responseHeads;
        private long _sendFileBytes;
        private int _shutdownCalls;
        private int _shutdownWriteCalls;
        private int _resetOnCloseCalls;
        private int _injectedFaults;

        /// <summary>recv calls on this socket, this one included while a fault callback runs.</summary>
        public int ReceiveCalls => Volatile.Read(ref _receiveCalls);

        public int SendMessageCalls => Volatile.Read(ref _sendMessageCalls);

        /// <summary>sendmsg calls whose first bytes were a status line ("HTTP/1."): roughly, responses begun.</summary>
        public int ResponseHeads => Volatile.Read(ref _responseHeads);

        /// <summary>Bytes sendfile really sent on this socket.</summary>
        public long SendFileBytes => Interlocked.Read(ref _sendFileBytes);

        public int ShutdownCalls => Volatile.Read(ref _shutdownCalls);

        /// <summary>shutdown(2) calls that sent a FIN (SHUT_WR or SHUT_RDWR).</summary>
        public int ShutdownWriteCalls => Volatile.Read(ref _shutdownWriteCalls);

        public int ResetOnCloseCalls => Volatile.Read(ref _resetOnCloseCalls);

        /// <summary>Faults a test's callback injected on this socket.</summary>
        public int InjectedFaults => Volatile.Read(ref _injectedFaults);

        internal void CountReceive() => Interlocked.Increment(ref _receiveCalls);

        internal int CountSendMessage(bool responseHead)
        {
            Interlocked.Increment(ref _sendMessageCalls);
            return responseHead ? Interlocked.Increment(ref _responseHeads) : ResponseHeads;
        }

        internal void CountSendFile(long bytes) => Interlocked.Add(ref _sendFileBytes, bytes);

        internal void CountShutdown(int how)
        {
            Interlocked.Increment(ref _shutdownCalls);
            if (how is LibC.SHUT_WR or LibC.SHUT_RDWR)
            {
                Interlocked.Increment(ref _shutdownWriteCalls);
            }
        }

        internal void CountResetOnClose() => Interlocked.Increment(ref _resetOnCloseCalls);

        internal void CountInjected() => Interlocked.Increment(ref _injectedFaults);
    }

    /// <summary>Decides the result of accept call number <paramref name="call"/> (1-based); null makes the real call.</summary>
    public delegate SyscallResult? AcceptFaultHandler(int call);

    /// <summary>Before a sendfile of <paramref name="count"/> bytes: a result to return instead, or null for the real call.</summary>
    public delegate SyscallResult? SendFileFaultHandler(SocketLog socket, long count);

    /// <summary>
    /// Before a sendmsg: a result to return instead, or null for the real call. <paramref name="responseHead"/>
    /// is the number of this socket's sendmsg calls so far (this one included) that began with a status line,
    /// when this one does, else 0.
    /// </summary>
    public delegate SyscallResult? SendMessageFaultHandler(SocketLog socket, int responseHead);

    /// <summary>
    /// Before a call on <paramref name="socket"/> (recv, setsockopt): a result to return instead, or null for the
    /// real call. Errors only for recv: a short count or EAGAIN would wait, by design, for an edge that never comes.
    /// </summary>
    public delegate SyscallResult? SocketFaultHandler(SocketLog socket);

    /// <summary>Before a pread (the copy path and content sniffing): a result to return instead, or null for the real call.</summary>
    public delegate SyscallResult? ReadFileFaultHandler(long offset, int length);

    private static readonly byte[] StatusLinePrefix = Encoding.ASCII.GetBytes("HTTP/1.");

    private readonly ConditionalWeakTable<SafeHandle, SocketLog> _sockets = new();
    private readonly ConcurrentQueue<SocketLog> _allSockets = new();
    private int _acceptCalls;
    private int _armedAcceptCalls;
    private long _sendFileWouldBlock;
    private long _sendMessageWouldBlock;
    private long _shortenedSendMessages;
    private long _shortenedSendFiles;
    private long _injectedFaults;

    /// <summary>
    /// When set, caps every sendmsg to a prefix of its first vector of 1 to this many bytes, chosen at random:
    /// a short write on every call.
    /// </summary>
    public int MaxSendMessageBytes { get; init; }

    /// <summary>When set, caps every sendfile to 1 to this many bytes, chosen at random.</summary>
    public long MaxSendFileBytes { get; init; }

    /// <summary>Consulted for accept calls made after <see cref="ArmAcceptFault"/>.</summary>
    public AcceptFaultHandler? AcceptFault { get; private set; }

    public SendFileFaultHandler? SendFileFault { get; init; }

    public SendMessageFaultHandler? SendMessageFault { get; init; }

    /// <summary>Consulted before every recv; must return errors only (see <see cref="SocketFaultHandler"/>).</summary>
    public SocketFaultHandler? ReceiveFault { get; init; }

    /// <summary>Consulted before every integer setsockopt (TCP_NODELAY at accept).</summary>
    public SocketFaultHandler? SetOptionFault { get; init; }

    public ReadFileFaultHandler? ReadFileFault { get; init; }

    /// <summary>Replaces what cachestat says for a file range (offset, length): e.g. 0 pages, or ENOSYS.</summary>
    public Func<long, long, SyscallResult?>? CachedPagesFault { get; init; }

    /// <summary>cachestat calls made through the seam.</summary>
    public int CachedPagesCalls => Volatile.Read(ref _cachedPagesCalls);

    /// <summary>Replaces what preadv2(RWF_NOWAIT) says for a file offset: e.g. EAGAIN, a page still being read.</summary>
    public Func<long, SyscallResult?>? ReadFileIfCachedFault { get; init; }

    /// <summary>preadv2(RWF_NOWAIT) calls made through the seam.</summary>
    public int ReadFileIfCachedCalls => Volatile.Read(ref _readFileIfCachedCalls);

    private int _readFileIfCachedCalls;

    /// <summary>The names of the threads that made pread calls (a loop thread is "splice-loop-N").</summary>
    public IReadOnlyCollection<string> ReadFileThreads => _readFileThreads.Keys.ToArray();

    private int _cachedPagesCalls;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, bool> _readFileThreads = new();

    /// <summary>Every connection socket seen so far, in the order first seen (at accept, through TCP_NODELAY).</summary>
    public IReadOnlyList<SocketLog> Sockets => _allSockets.ToArray();

    public int AcceptCalls => Volatile.Read(ref _acceptCalls);

    /// <summary>sendfile calls that really returned EAGAIN.</summary>
    public long SendFileWouldBlock => Interlocked.Read(ref _sendFileWouldBlock);

    /// <summary>sendmsg calls that really returned EAGAIN.</summary>
    public long SendMessageWouldBlock => Interlocked.Read(ref _sendMessageWouldBlock);

    /// <summary>sendmsg calls this injector cut short (asked for fewer bytes than the caller offered).</summary>
    public long ShortenedSendMessages => Interlocked.Read(ref _shortenedSendMessages);

    /// <summary>sendfile calls this injector cut short.</summary>
    public long ShortenedSendFiles => Interlocked.Read(ref _shortenedSendFiles);

    /// <summary>Results the fault callbacks returned in place of a real call.</summary>
    public long InjectedFaults => Interlocked.Read(ref _injectedFaults);

    /// <summary>Starts consulting <paramref name="fault"/>, numbering accept calls from 1 from now on.</summary>
    public void ArmAcceptFault(AcceptFaultHandler fault)
    {
        Volatile.Write(ref _armedAcceptCalls, 0);
        AcceptFault = fault;
    }

    /// <summary>The log of one socket (made on first sight).</summary>
    public SocketLog For(SafeHandle socket) => _sockets.GetValue(socket, _ =>
    {
        var log = new SocketLog();
        _allSockets.Enqueue(log);
        return log;
    });

    public override SyscallResult Accept(SafeHandle listener, byte* address, int* addressLength)
    {
        Interlocked.Increment(ref _acceptCalls);
        if (AcceptFault is { } fault && fault(Interlocked.Increment(ref _armedAcceptCalls)) is { } injected)
        {
            Interlocked.Increment(ref _injectedFaults);
            return injected;
        }
        return base.Accept(listener, address, addressLength);
    }

    public override SyscallResult SendMessage(SafeHandle socket, LibC.IOVector* vectors, int count, int flags)
    {
        SocketLog log = For(socket);
        bool head = count > 0 && new ReadOnlySpan<byte>(vectors[0].Base, (int)Math.Min(vectors[0].Length, (nuint)StatusLinePrefix.Length)).SequenceEqual(StatusLinePrefix);
        int heads = log.CountSendMessage(head);
        if (SendMessageFault is { } fault && fault(log, head ? heads : 0) is { } injected)
        {
            return Injected(log, injected);
        }

        SyscallResult result;
        if (MaxSendMessageBytes > 0 && count > 0)
        {
            // The caller's vectors are its own stackalloc: cut a copy, never them.
            LibC.IOVector* first = stackalloc LibC.IOVector[1];
            first[0] = vectors[0];
            nuint cap = (nuint)Random.Shared.Next(1, MaxSendMessageBytes + 1);
            if (first[0].Length > cap)
            {
                first[0].Length = cap;
            }
            if (count > 1 || first[0].Length < vectors[0].Length)
            {
                Interlocked.Increment(ref _shortenedSendMessages);
            }
            result = base.SendMessage(socket, first, 1, flags);
        }
        else
        {
            result = base.SendMessage(socket, vectors, count, flags);
        }
        if (result.WouldBlock)
        {
            Interlocked.Increment(ref _sendMessageWouldBlock);
        }
        return result;
    }

    public override SyscallResult SendFile(SafeHandle socket, SafeHandle file, long offset, long count)
    {
        SocketLog log = For(socket);
        if (SendFileFault is { } fault && fault(log, count) is { } injected)
        {
            return Injected(log, injected);
        }
        if (MaxSendFileBytes > 0)
        {
            long cap = Random.Shared.NextInt64(1, MaxSendFileBytes + 1);
            if (count > cap)
            {
                count = cap;
                Interlocked.Increment(ref _shortenedSendFiles);
            }
        }
        SyscallResult result = base.SendFile(socket, file, offset, count);
        if (result.WouldBlock)
        {
            Interlocked.Increment(ref _sendFileWouldBlock);
        }
        else if (result.IsSuccess)
        {
            log.CountSendFile(result.Count);
        }
        return result;
    }

    public override SyscallResult Receive(SafeHandle socket, Span<byte> buffer)
    {
        SocketLog log = For(socket);
        log.CountReceive();
        if (ReceiveFault is { } fault && fault(log) is { } injected)
        {
            Assert.False(injected.IsSuccess || injected.WouldBlock, "Only errors may be injected into recv.");
            return Injected(log, injected);
        }
        return base.Receive(socket, buffer);
    }

    public override SyscallResult CachedPages(SafeHandle file, long offset, long length)
    {
        Interlocked.Increment(ref _cachedPagesCalls);
        return CachedPagesFault?.Invoke(offset, length) ?? base.CachedPages(file, offset, length);
    }

    public override SyscallResult ReadFileIfCached(SafeHandle file, Span<byte> buffer, long offset)
    {
        Interlocked.Increment(ref _readFileIfCachedCalls);
        return ReadFileIfCachedFault?.Invoke(offset) ?? base.ReadFileIfCached(file, buffer, offset);
    }

    public override SyscallResult ReadFile(SafeHandle file, Span<byte> buffer, long offset)
    {
        _readFileThreads.TryAdd(Thread.CurrentThread.Name ?? "(thread pool or unnamed)", true);
        if (ReadFileFault is { } fault && fault(offset, buffer.Length) is { } injected)
        {
            Interlocked.Increment(ref _injectedFaults);
            return injected;
        }
        return base.ReadFile(file, buffer, offset);
    }

    public override SyscallResult Shutdown(SafeHandle socket, int how)
    {
        For(socket).CountShutdown(how);
        return base.Shutdown(socket, how);
    }

    public override SyscallResult SetOption(SafeHandle socket, int level, int name, int value)
    {
        SocketLog log = For(socket);
        if (SetOptionFault is { } fault && fault(log) is { } injected)
        {
            return Injected(log, injected);
        }
        return base.SetOption(socket, level, name, value);
    }

    public override SyscallResult SetResetOnClose(SafeHandle socket)
    {
        For(socket).CountResetOnClose();
        return base.SetResetOnClose(socket);
    }

    private SyscallResult Injected(SocketLog socket, SyscallResult result)
    {
        socket.CountInjected();
        Interlocked.Increment(ref _injectedFaults);
        return result;
    }
}

using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using SpliceTransport.Interop;
using SpliceTransport.Tests.FaultInjection;
using SpliceTransport.Tests.Infrastructure;
using SpliceTransport.Files;

namespace SpliceTransport.Tests.Http;

/// <summary>
/// Cold files never make an event loop wait for the disk: before each sendfile chunk the pump asks cachestat(2)
/// whether the chunk is cached, and reads a cold one into the cache on the thread pool first. The probe's
/// answers are injected through the Syscalls seam (a file cannot be kept out of the cache on demand), and the
/// probe itself is checked against the real kernel on a real, evicted file.
/// </summary>
public class ColdFileTests(FileFixture files) : IClassFixture<FileFixture>
{
    /// <summary>Three chunks at the default 2 MiB chunk size, the last one short and odd.</summary>
    private const long FileSize = 5L * 1024 * 1024 + 1;

    private const int ChunksInFile = 3;

    /// <summary>Event 203, CacheProbeUnavailable.</summary>
    private const int CacheProbeUnavailable = 203;

    private string File => files.Get("cold/five-mib.bin", FileSize);

    private Task<SpliceTestHost> StartAsync(FaultInjectingSyscalls syscalls, bool prefetch = true)
    {
        string path = File;
        return SpliceTestHost.StartAsync(
            app => app.MapGet("/file", (HttpContext context) => context.Response.SendFileAsync(path, 0, null, context.RequestAborted)),
            options =>
            {
                options.Syscalls = syscalls;
                options.PrefetchUncachedFiles = prefetch;
            });
    }

    private async Task DownloadAndCheckAsync(SpliceTestHost host)
    {
        using HttpClient client = host.CreateClient();
        byte[] body = await client.GetByteArrayAsync("/file");
        Assert.Equal(FileSize, body.Length);
        Assert.Equal(TestFiles.Sha256(System.IO.File.ReadAllBytes(File)), TestFiles.Sha256(body));
    }

    [Fact]
    public async Task ColdChunksAreReadIntoTheCacheOffTheLoopAndThenSentZeroCopy()
    {
        var syscalls = new FaultInjectingSyscalls { CachedPagesFault = (_, _) => SyscallResult.Success(0) };
        await using SpliceTestHost host = await StartAsync(syscalls);

        await DownloadAndCheckAsync(host);

        Assert.Equal(ChunksInFile, syscalls.CachedPagesCalls);
        await host.Metrics.AssertEventuallyAsync(ChunksInFile, m => m.Prefetches);
        await host.Metrics.AssertEventuallyAsync(FileSize, m => m.PrefetchedBytes);
        // Counted when the app's send completes, which may be just after the client has every byte.
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "the response is counted as zero-copy");
        Assert.NotEmpty(syscalls.ReadFileThreads);
        Assert.DoesNotContain(syscalls.ReadFileThreads, name => name.StartsWith("splice-loop", StringComparison.Ordinal));
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task CachedChunksAreProbedOncePerChunkAndNotRead()
    {
        var syscalls = new FaultInjectingSyscalls();
        await using SpliceTestHost host = await StartAsync(syscalls);
        System.IO.File.ReadAllBytes(File); // In the page cache now, whatever the machine did with it before.

        await DownloadAndCheckAsync(host);

        Assert.Equal(ChunksInFile, syscalls.CachedPagesCalls);
        Assert.Equal(0, host.Metrics.Prefetches);
        Assert.Empty(syscalls.ReadFileThreads);
    }

    /// <summary>
    /// Readahead puts pages in the cache before they are read, and cachestat counts them: a chunk whose last page
    /// is still being read (EAGAIN from preadv2(RWF_NOWAIT)) is warmed off the loop like a missing one.
    /// </summary>
    [Fact]
    public async Task ACachedChunkStillBeingReadIsWarmedOffTheLoop()
    {
        const long ChunkSize = 2L * 1024 * 1024;
        var syscalls = new FaultInjectingSyscalls
        {
            ReadFileIfCachedFault = offset => offset == 2 * ChunkSize - 1 ? SyscallResult.Failure(Errno.EAGAIN) : null,
        };
        await using SpliceTestHost host = await StartAsync(syscalls);
        System.IO.File.ReadAllBytes(File);

        await DownloadAndCheckAsync(host);

        Assert.Equal(ChunksInFile, syscalls.CachedPagesCalls);
        await host.Metrics.AssertEventuallyAsync(1, m => m.Prefetches);
        await host.Metrics.AssertEventuallyAsync(ChunkSize, m => m.PrefetchedBytes);
        // Counted when the app's send completes, which may be just after the client has every byte.
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "the response is counted as zero-copy");
        Assert.DoesNotContain(syscalls.ReadFileThreads, name => name.StartsWith("splice-loop", StringComparison.Ordinal));
    }

    /// <summary>A file system that cannot read without waiting (EOPNOTSUPP) is asked once, then trusted to cachestat.</summary>
    [Fact]
    public async Task WithoutNoWaitReadsTheReadinessProbeIsMadeOnce()
    {
        var syscalls = new FaultInjectingSyscalls { ReadFileIfCachedFault = _ => SyscallResult.Failure(Errno.EOPNOTSUPP) };
        await using SpliceTestHost host = await StartAsync(syscalls);
        System.IO.File.ReadAllBytes(File);

        await DownloadAndCheckAsync(host);

        Assert.Equal(1, syscalls.ReadFileIfCachedCalls);
        Assert.Equal(0, host.Metrics.Prefetches);
        host.Logs.AssertNoErrors();
    }

    /// <summary>
    /// A hot file served again and again is probed once a second, not on every response (ResidencyMemo): the
    /// cached descriptor remembers that the whole file was resident. A probe that finds it cold remembers nothing,
    /// so a cold file is probed (and warmed) every time; a new version of the file starts with no memo.
    /// </summary>
    [Fact]
    public async Task AHotFileIsProbedOnceForManyResponsesAndAColdOneEveryTime()
    {
        string path = files.Get("cold/hot-64k.bin", 64 * 1024);
        bool cold = false;
        var syscalls = new FaultInjectingSyscalls { ReadFileIfCachedFault = _ => Volatile.Read(ref cold) ? SyscallResult.Failure(Errno.EAGAIN) : null };
        await using SpliceTestHost host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/file", (HttpContext context) => context.Response.SendFileAsync(path, 0, null, context.RequestAborted)),
            options => options.Syscalls = syscalls);
        System.IO.File.ReadAllBytes(path);
        string expected = TestFiles.Sha256(System.IO.File.ReadAllBytes(path));
        using HttpClient client = host.CreateClient();

        const int responses = 20;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < responses; i++)
        {
            Assert.Equal(expected, TestFiles.Sha256(await client.GetByteArrayAsync("/file")));
        }
        // A probe of the whole file (cachestat, then the first and the last page) at most once a second, not per
        // response: one in all when the responses took less than a second (they take milliseconds).
        int probes = syscalls.CachedPagesCalls;
        Assert.InRange(probes, 1, Math.Min(responses - 1, 1 + (int)clock.Elapsed.TotalSeconds));
        Assert.Equal(2 * probes, syscalls.ReadFileIfCachedCalls);

        // A new version (another inode): probed again, and while it reads as cold, on every response.
        string replacement = path + ".new";
        System.IO.File.Copy(path, replacement);
        System.IO.File.Move(replacement, path, overwrite: true);
        Volatile.Write(ref cold, true);
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(expected, TestFiles.Sha256(await client.GetByteArrayAsync("/file")));
        }
        Assert.Equal(probes + 2, syscalls.CachedPagesCalls);
        await host.Metrics.AssertEventuallyAsync(2, m => m.Prefetches);
    }

    /// <summary>
    /// A file of one page is probed with the one-byte RWF_NOWAIT read alone: it answers all that cachestat would,
    /// with one system call instead of two on every small response (perf/results/profile.md counts them).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AOnePageFileIsProbedWithOneCall(bool pageStillBeingRead)
    {
        string path = files.Get("cold/one-page.bin", 4000);
        var syscalls = new FaultInjectingSyscalls
        {
            ReadFileIfCachedFault = _ => pageStillBeingRead ? SyscallResult.Failure(Errno.EAGAIN) : null,
        };
        await using SpliceTestHost host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/file", (HttpContext context) => context.Response.SendFileAsync(path, 0, null, context.RequestAborted)),
            options => options.Syscalls = syscalls);
        System.IO.File.ReadAllBytes(path);

        using HttpClient client = host.CreateClient();
        byte[] body = await client.GetByteArrayAsync("/file");

        Assert.Equal(TestFiles.Sha256(System.IO.File.ReadAllBytes(path)), TestFiles.Sha256(body));
        Assert.Equal(0, syscalls.CachedPagesCalls);
        Assert.Equal(1, syscalls.ReadFileIfCachedCalls);
        await host.Metrics.AssertEventuallyAsync(pageStillBeingRead ? 1 : 0, m => m.Prefetches);
        await host.Metrics.AssertEventuallyAsync(1, m => m.ZeroCopyResponses);
    }

    [Fact]
    public async Task WithoutCachestatTheFileIsSentAsBeforeAndThatIsLoggedOnce()
    {
        var syscalls = new FaultInjectingSyscalls { CachedPagesFault = (_, _) => SyscallResult.Failure(Errno.ENOSYS) };
        await using SpliceTestHost host = await StartAsync(syscalls);

        await DownloadAndCheckAsync(host);
        await DownloadAndCheckAsync(host);

        Assert.Equal(1, syscalls.CachedPagesCalls);
        Assert.Single(host.Logs.Entries, e => e.EventId.Id == CacheProbeUnavailable);
        Assert.Equal(0, host.Metrics.Prefetches);
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 2, "both responses are counted as zero-copy");
    }

    [Fact]
    public async Task WithPrefetchOffNothingIsProbed()
    {
        var syscalls = new FaultInjectingSyscalls { CachedPagesFault = (_, _) => SyscallResult.Success(0) };
        await using SpliceTestHost host = await StartAsync(syscalls, prefetch: false);

        await DownloadAndCheckAsync(host);

        Assert.Equal(0, syscalls.CachedPagesCalls);
        Assert.Equal(0, host.Metrics.Prefetches);
    }

    /// <summary>The real cachestat(2), through the production seam, on a file written, flushed and evicted.</summary>
    [Fact]
    public void CachestatCountsTheCachedPagesOfARealFile()
    {
        const int Pages = 64;
        long pageSize = Environment.SystemPageSize;
        string path = Path.Combine(files.Root, "cold/probe.bin");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        System.IO.File.WriteAllBytes(path, new byte[Pages * pageSize]);
        using SafeFileHandle file = System.IO.File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        System.IO.File.ReadAllBytes(path);

        SyscallResult hot = Syscalls.Default.CachedPages(file, 0, Pages * pageSize);
        Assert.True(hot.IsSuccess, $"cachestat failed: errno {hot.Errno}");
        Assert.Equal(Pages, hot.Count);
        // A range of one byte in the middle touches one page; one that straddles a boundary touches two.
        Assert.Equal(1, Syscalls.Default.CachedPages(file, 10 * pageSize + 5, 1).Count);
        Assert.Equal(2, Syscalls.Default.CachedPages(file, 10 * pageSize - 1, 2).Count);

        // Clean pages can be dropped: written back first, then advised away.
        RandomAccess.FlushToDisk(file);
        Assert.Equal(0, posix_fadvise((int)file.DangerousGetHandle(), 0, 0, PosixFadviseDontNeed));
        SyscallResult cold = Syscalls.Default.CachedPages(file, 0, Pages * pageSize);
        Assert.True(cold.IsSuccess);
        if (FileSystemKeepsPages(path))
        {
            return; // tmpfs and the like hold their pages in memory: nothing to evict, and nothing cold to find.
        }
        Assert.True(cold.Count < Pages, $"All {Pages} pages are still cached after POSIX_FADV_DONTNEED.");
    }

    /// <summary>The real preadv2(RWF_NOWAIT), through the production seam: EAGAIN on an evicted page, a byte on a cached one.</summary>
    [Fact]
    public void NoWaitReadTellsAReadablePageFromAnEvictedOne()
    {
        long pageSize = Environment.SystemPageSize;
        string path = Path.Combine(files.Root, "cold/nowait.bin");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        System.IO.File.WriteAllBytes(path, new byte[16 * pageSize]);
        using SafeFileHandle file = System.IO.File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        byte[] oneByte = new byte[1];

        System.IO.File.ReadAllBytes(path);
        SyscallResult cached = Syscalls.Default.ReadFileIfCached(file, oneByte, 3 * pageSize);
        Assert.True(cached.IsSuccess && cached.Count == 1, $"preadv2(RWF_NOWAIT) on a cached page returned {cached}.");
        SyscallResult end = Syscalls.Default.ReadFileIfCached(file, oneByte, 16 * pageSize);
        Assert.True(end.IsSuccess && end.Count == 0, $"preadv2(RWF_NOWAIT) at the end of the file returned {end}.");

        RandomAccess.FlushToDisk(file);
        if (FileSystemKeepsPages(path))
        {
            return;
        }
        // POSIX_FADV_DONTNEED skips a page it cannot drop at that moment (one another CPU still holds in a batch,
        // under the whole suite's load): it is asked again until cachestat, the kernel's own count, finds the page
        // gone, and only then is the claim checked.
        bool gone = false;
        for (int attempt = 0; attempt < EvictionAttempts && !gone; attempt++)
        {
            Assert.Equal(0, posix_fadvise((int)file.DangerousGetHandle(), 0, 0, PosixFadviseDontNeed));
            gone = Syscalls.Default.CachedPages(file, 3 * pageSize, 1) is { IsSuccess: true, Count: 0 };
            if (!gone)
            {
                Thread.Sleep(EvictionRetryDelay);
            }
        }
        Assert.True(gone, $"The page stayed in the page cache after {EvictionAttempts} POSIX_FADV_DONTNEED calls.");
        SyscallResult evicted = Syscalls.Default.ReadFileIfCached(file, oneByte, 3 * pageSize);
        Assert.True(evicted.WouldBlock, $"preadv2(RWF_NOWAIT) on an evicted page returned {evicted}, not EAGAIN.");
    }

    private const int PosixFadviseDontNeed = 4;

    /// <summary>Eviction asked up to 50 times, 20 ms apart: a second for pages another CPU holds to be let go.</summary>
    private const int EvictionAttempts = 50;

    private static readonly TimeSpan EvictionRetryDelay = TimeSpan.FromMilliseconds(20);

    [DllImport("libc", SetLastError = true)]
    private static extern int posix_fadvise(int fd, long offset, long length, int advice);

    /// <summary>True on file systems whose pages are the file (tmpfs, ramfs): Linux's TMPFS_MAGIC and RAMFS_MAGIC.</summary>
    private static bool FileSystemKeepsPages(string path)
    {
        using SafeFileHandle handle = System.IO.File.OpenHandle(path);
        long type = Syscalls.Default.FileSystemType(handle).Count;
        return type is 0x01021994 or unchecked((long)0x858458f6);
    }
}

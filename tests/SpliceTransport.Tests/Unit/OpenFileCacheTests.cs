using SpliceTransport.Http;
using SpliceTransport.Interop;
using SpliceTransport.Tests.Infrastructure;
using SpliceTransport.Files;

namespace SpliceTransport.Tests.Unit;

/// <summary>
/// The open-file cache on real files: a repeat reuses the descriptor, any new version of the path (replaced,
/// rewritten, resized, deleted) is opened again or refused, the bound holds, and a descriptor closes exactly when
/// its last user lets go.
/// </summary>
public class OpenFileCacheTests
{
    private static CachedFile Open(OpenFileCache cache, string path)
    {
        CachedFile? file = FileOpener.Open(Syscalls.Default, cache, path, 0, null, out _, out string? reason);
        Assert.Null(reason);
        return file!;
    }

    private static byte[] ReadAll(CachedFile file)
    {
        byte[] bytes = new byte[file.Status.Size];
        Assert.Equal(bytes.Length, Syscalls.Default.ReadFile(file.Handle, bytes, 0).Count);
        return bytes;
    }

    [Fact]
    public void ARepeatReusesTheDescriptorAndOpensNothing()
    {
        using var files = new TestFiles();
        string path = files.Create("repeat.bin", 4096);
        using var cache = new OpenFileCache(capacity: 10, OpenFileCache.DefaultInactive);
        CachedFile first = Open(cache, path);
        first.Release();
        CachedFile second = Open(cache, path);
        Assert.Same(first, second);
        Assert.Equal(1, cache.Opens);
        Assert.False(second.Handle.IsClosed);
        second.Release();
    }

    [Fact]
    public void AFileReplacedByARenameIsOpenedAgainAndTheOldDescriptorClosesWhenItsSendEnds()
    {
        using var files = new TestFiles();
        string path = files.Create("replaced.bin", 4096);
        using var cache = new OpenFileCache(capacity: 10, OpenFileCache.DefaultInactive);
        CachedFile old = Open(cache, path); // Still "sending": one reference held.

        string next = path + ".new";
        File.WriteAllBytes(next, [1, 2, 3]);
        File.Move(next, path, overwrite: true);

        CachedFile fresh = Open(cache, path);
        Assert.NotSame(old, fresh);
        Assert.Equal([1, 2, 3], ReadAll(fresh));
        Assert.False(old.Handle.IsClosed, "The old version was closed while a response was still sending it.");
        old.Release();
        Assert.True(old.Handle.IsClosed);
        fresh.Release();
        Assert.Equal(2, cache.Opens);
    }

    [Fact]
    public void AFileRewrittenInPlaceToAnotherSizeIsSeenAtItsNewSize()
    {
        using var files = new TestFiles();
        string path = files.Create("rewritten.bin", 4096);
        using var cache = new OpenFileCache(capacity: 10, OpenFileCache.DefaultInactive);
        Open(cache, path).Release();
        File.WriteAllBytes(path, new byte[100]); // Same inode, new size and mtime.
        CachedFile file = FileOpener.Open(Syscalls.Default, cache, path, 0, null, out long length, out _)!;
        Assert.Equal(100, length);
        Assert.Equal(2, cache.Opens);
        file.Release();
    }

    [Fact]
    public void ADeletedFileIsNotFoundAndItsDescriptorClosesAtTheNextSweep()
    {
        using var files = new TestFiles();
        string path = files.Create("deleted.bin", 4096);
        using var cache = new OpenFileCache(capacity: 10, TimeSpan.Zero);
        CachedFile file = Open(cache, path);
        file.Release();
        File.Delete(path);
        Assert.Throws<FileNotFoundException>(() => FileOpener.Open(Syscalls.Default, cache, path, 0, null, out _, out _));
        cache.Sweep(); // Unused for longer than Inactive (0).
        Assert.True(file.Handle.IsClosed);
        Assert.Equal(0, cache.Count);
    }

    [Fact]
    public void TheBoundHoldsAndFilesBeyondItAreServedUncached()
    {
        using var files = new TestFiles();
        using var cache = new OpenFileCache(capacity: 2, OpenFileCache.DefaultInactive);
        var opened = new List<CachedFile>();
        for (int i = 0; i < 5; i++)
        {
            opened.Add(Open(cache, files.Create($"bound-{i}.bin", 10 + i)));
        }
        Assert.Equal(2, cache.Count);
        foreach (CachedFile file in opened)
        {
            file.Release();
        }
        // The three beyond the bound were this response's alone: closed with it. The two cached stay open.
        Assert.Equal(3, opened.Count(file => file.Handle.IsClosed));
        cache.Dispose();
        Assert.All(opened, file => Assert.True(file.Handle.IsClosed));
    }

    [Fact]
    public void TheBoundIsAtMostAQuarterOfTheDescriptorLimit()
    {
        using var cache = new OpenFileCache(capacity: int.MaxValue, OpenFileCache.DefaultInactive);
        Assert.Equal(Math.Min(int.MaxValue, Syscalls.Default.DescriptorLimit().Count / 4), cache.Capacity);
    }

    [Fact]
    public void AReferenceIsNeverTakenOnAClosedDescriptor()
    {
        using var files = new TestFiles();
        using FileDescriptorHandle handle = new(LibC.open(files.Create("refs.bin", 1), LibC.O_RDONLY | LibC.O_CLOEXEC));
        var file = new CachedFile(handle, default);
        Assert.True(file.TryAddReference());
        file.Release();
        file.Release();
        Assert.True(handle.IsClosed);
        Assert.False(file.TryAddReference());
        Assert.Throws<InvalidOperationException>(file.Release);
    }
}

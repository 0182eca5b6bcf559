package links

import (
	"crypto/rand"
	"errors"
	"io"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// alphabetIndex maps a byte to its position in Alphabet, or -1.
func alphabetIndex() [256]int {
	var idx [256]int
	for i := range idx {
		idx[i] = -1
	}
	for i := 0; i < len(Alphabet); i++ {
		idx[Alphabet[i]] = i
	}
	return idx
}

func TestAlphabet(t *testing.T) {
	if len(Alphabet) != 62 {
		t.Fatalf("len(Alphabet) = %d, want 62", len(Alphabet))
	}
	idx := alphabetIndex()
	seen := 0
	for c := 0; c < 256; c++ {
		if idx[c] >= 0 {
			seen++
			if !codeByte(byte(c)) {
				t.Errorf("Alphabet has %q, which codes may not contain", rune(c))
			}
		}
	}
	if seen != 62 {
		t.Fatalf("Alphabet has %d distinct characters, want 62", seen)
	}
	if acceptBelow != 248 {
		t.Fatalf("acceptBelow = %d, want 248", acceptBelow)
	}
}

// sliceReader returns its bytes in reads of at most max bytes, then io.EOF.
type sliceReader struct {
	b   []byte
	max int
	n   int // bytes handed out
}

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if r.max > 0 && len(p) > r.max {
		p = p[:r.max]
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	r.n += n
	return n, nil
}

// repeatReader returns the same byte forever.
type repeatReader struct {
	b     byte
	reads int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	r.reads++
	for i := range p {
		p[i] = r.b
	}
	return len(p), nil
}

// emptyReader returns (0, nil) forever.
type emptyReader struct{ reads int }

func (r *emptyReader) Read([]byte) (int, error) { r.reads++; return 0, nil }

func TestNewCodeRejectsHighBytes(t *testing.T) {
	// Bytes >= 248 must be skipped; the others map to Alphabet[b%62].
	src := []byte{248, 0, 255, 61, 250, 62, 247, 249, 125, 252}
	for _, max := range []int{0, 1, 3} {
		r := &sliceReader{b: src, max: max}
		got, err := NewCode(r, 5)
		if err != nil {
			t.Fatalf("max read %d: NewCode: %v", max, err)
		}
		// 0->'0', 61->'z', 62->'0', 247->'z', 125->'1'
		if got != "0z0z1" {
			t.Errorf("max read %d: NewCode = %q, want %q", max, got, "0z0z1")
		}
	}
}

func TestNewCodeExactUniformity(t *testing.T) {
	// Feeding every byte value equally often must give every character
	// exactly equally often: 10 cycles of 0..255 hold 40 accepted bytes per
	// character. Plain b%62 would give the first 8 characters 50 each.
	var src []byte
	for range 10 {
		for b := 0; b < 256; b++ {
			src = append(src, byte(b))
		}
	}
	got, err := NewCode(&sliceReader{b: src}, 62*40)
	if err != nil {
		t.Fatalf("NewCode: %v", err)
	}
	for i := 0; i < len(Alphabet); i++ {
		if n := strings.Count(got, Alphabet[i:i+1]); n != 40 {
			t.Errorf("character %q appears %d times, want 40", Alphabet[i], n)
		}
	}
}

func TestNewCodeErrors(t *testing.T) {
	errBoom := errors.New("boom")
	t.Run("reader error", func(t *testing.T) {
		code, err := NewCode(iotest.ErrReader(errBoom), CodeLength)
		if !errors.Is(err, errBoom) || code != "" {
			t.Fatalf("NewCode = %q, %v; want \"\", error wrapping %v", code, err, errBoom)
		}
	})
	t.Run("short source", func(t *testing.T) {
		code, err := NewCode(&sliceReader{b: []byte{1, 2, 3}}, CodeLength)
		if !errors.Is(err, io.EOF) || code != "" {
			t.Fatalf("NewCode = %q, %v; want \"\", error wrapping io.EOF", code, err)
		}
	})
	t.Run("error after data", func(t *testing.T) {
		// Data and error in the same Read: the data is used, then the error returned.
		r := iotest.DataErrReader(&sliceReader{b: []byte{1, 2, 3, 4}})
		code, err := NewCode(r, CodeLength)
		if !errors.Is(err, io.EOF) || code != "" {
			t.Fatalf("NewCode = %q, %v; want \"\", error wrapping io.EOF", code, err)
		}
		code, err = NewCode(iotest.DataErrReader(&sliceReader{b: []byte{1, 2, 3, 4, 5, 6, 7, 8}}), CodeLength)
		if err != nil || code != "1234567" {
			t.Fatalf("NewCode = %q, %v; want \"1234567\", nil", code, err)
		}
	})
	t.Run("only rejected bytes", func(t *testing.T) {
		r := &repeatReader{b: 255}
		code, err := NewCode(r, CodeLength)
		if err == nil || code != "" {
			t.Fatalf("NewCode = %q, %v; want an error", code, err)
		}
		if r.reads > 64*CodeLength+64 {
			t.Fatalf("NewCode read %d times; it should give up sooner", r.reads)
		}
	})
	t.Run("no progress", func(t *testing.T) {
		r := &emptyReader{}
		code, err := NewCode(r, CodeLength)
		if !errors.Is(err, io.ErrNoProgress) || code != "" {
			t.Fatalf("NewCode = %q, %v; want \"\", io.ErrNoProgress", code, err)
		}
		if r.reads > maxEmptyReads {
			t.Fatalf("NewCode read %d times, want at most %d", r.reads, maxEmptyReads)
		}
	})
	t.Run("bad length", func(t *testing.T) {
		for _, n := range []int{0, -1, math.MinInt} {
			if code, err := NewCode(rand.Reader, n); err == nil {
				t.Errorf("NewCode(n=%d) = %q, nil; want an error", n, code)
			}
		}
	})
	t.Run("nil reader", func(t *testing.T) {
		if code, err := NewCode(nil, CodeLength); err == nil {
			t.Fatalf("NewCode(nil) = %q, nil; want an error", code)
		}
	})
}

func TestNewCodeLengths(t *testing.T) {
	for _, n := range []int{1, 3, 7, 63, 64, 65, 200, 1000} {
		code, err := NewCode(rand.Reader, n)
		if err != nil {
			t.Fatalf("NewCode(%d): %v", n, err)
		}
		if len(code) != n {
			t.Fatalf("NewCode(%d) has length %d", n, len(code))
		}
		for i := 0; i < len(code); i++ {
			if strings.IndexByte(Alphabet, code[i]) < 0 {
				t.Fatalf("NewCode(%d) = %q has %q, not in Alphabet", n, code, code[i])
			}
		}
		if n >= MinAliasLength && n <= MaxAliasLength && !ValidCode(code) {
			t.Fatalf("ValidCode(%q) = false for a generated code", code)
		}
	}
}

// chiSquare returns the chi-square statistic of counts against a uniform
// distribution over len(counts) bins.
func chiSquare(counts []int64) float64 {
	var total int64
	for _, c := range counts {
		total += c
	}
	want := float64(total) / float64(len(counts))
	var x float64
	for _, c := range counts {
		d := float64(c) - want
		x += d * d / want
	}
	return x
}

// chiSquarePValue is P(X >= x) for X chi-square distributed with df degrees
// of freedom: Q(df/2, x/2).
func chiSquarePValue(x float64, df int) float64 {
	return gammaQ(float64(df)/2, x/2)
}

// gammaQ is the regularized upper incomplete gamma function
// Q(a, x) = Γ(a, x)/Γ(a), for a > 0, x >= 0. It uses the power series of
// P = 1-Q for x < a+1 and a continued fraction (modified Lentz) for Q
// otherwise, each converging quickly in its region.
func gammaQ(a, x float64) float64 {
	if a <= 0 || x < 0 || math.IsNaN(a) || math.IsNaN(x) {
		return math.NaN()
	}
	if x == 0 {
		return 1
	}
	lg, _ := math.Lgamma(a)
	prefix := math.Exp(-x + a*math.Log(x) - lg) // x^a e^-x / Γ(a)
	const eps = 1e-15
	if x < a+1 {
		// P(a,x) = x^a e^-x / Γ(a) * Σ x^n / (a (a+1) ... (a+n))
		term := 1 / a
		sum := term
		for n := 1; n < 10000; n++ {
			term *= x / (a + float64(n))
			sum += term
			if math.Abs(term) < math.Abs(sum)*eps {
				break
			}
		}
		return 1 - sum*prefix
	}
	// Q(a,x) = x^a e^-x / Γ(a) * 1/(x+1-a- 1(1-a)/(x+3-a- 2(2-a)/(x+5-a- ...)))
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < 10000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < eps {
			break
		}
	}
	return prefix * h
}

// gammaQRef computes Q(a, x) for integer and half-integer a from closed
// forms: Q(1,x) = e^-x, Q(1/2,x) = erfc(√x), and the recurrence
// Q(a+1,x) = Q(a,x) + x^a e^-x / Γ(a+1).
func gammaQRef(a, x float64) float64 {
	base := 1.0
	q := math.Exp(-x)
	if a != math.Trunc(a) {
		base = 0.5
		q = math.Erfc(math.Sqrt(x))
	}
	for s := base; s < a; s++ {
		lg, _ := math.Lgamma(s + 1)
		q += math.Exp(s*math.Log(x) - x - lg)
	}
	return q
}

func TestGammaQ(t *testing.T) {
	closeTo := func(got, want, rel float64) bool {
		return math.Abs(got-want) <= rel*math.Abs(want)
	}
	for _, tc := range []struct{ a, x float64 }{
		{0.5, 0.1}, {0.5, 2}, {1, 0.5}, {1, 3}, {2, 1}, {5, 9.1535},
		{30, 20}, {30, 30}, {30, 49.8}, {30.5, 30}, {30.5, 50.444}, {30.5, 70},
		{1921.5, 1900}, {1921.5, 2100},
	} {
		got, want := gammaQ(tc.a, tc.x), gammaQRef(tc.a, tc.x)
		if !closeTo(got, want, 1e-9) {
			t.Errorf("gammaQ(%v, %v) = %.15g, closed form gives %.15g", tc.a, tc.x, got, want)
		}
	}
	// Published chi-square critical values (tables give 3 decimals).
	for _, tc := range []struct {
		x    float64
		df   int
		want float64
	}{
		{18.307, 10, 0.05},
		{99.607, 60, 0.001},
		{3.841, 1, 0.05},
		{6.635, 1, 0.01},
	} {
		if got := chiSquarePValue(tc.x, tc.df); !closeTo(got, tc.want, 2e-3) {
			t.Errorf("p-value of chi2=%v df=%d is %.6g, tables say %v", tc.x, tc.df, got, tc.want)
		}
	}
	if got := gammaQ(3, 0); got != 1 {
		t.Errorf("gammaQ(3, 0) = %v, want 1", got)
	}
	if got := gammaQ(30.5, 1e4); got > 1e-300 {
		t.Errorf("gammaQ(30.5, 1e4) = %v, want ~0", got)
	}
}

// positionCounts generates n codes of CodeLength characters from
// crypto/rand on all CPUs and counts each character at each position.
func positionCounts(t *testing.T, n int) [CodeLength][62]int64 {
	t.Helper()
	idx := alphabetIndex()
	workers := runtime.GOMAXPROCS(0)
	var (
		mu     sync.Mutex
		total  [CodeLength][62]int64
		wg     sync.WaitGroup
		errs   = make(chan error, workers)
		perJob = (n + workers - 1) / workers
	)
	for w := range workers {
		count := min(perJob, n-w*perJob)
		if count <= 0 {
			break
		}
		wg.Go(func() {
			var local [CodeLength][62]int64
			for range count {
				code, err := NewCode(rand.Reader, CodeLength)
				if err != nil {
					errs <- err
					return
				}
				if len(code) != CodeLength {
					errs <- errors.New("wrong length: " + code)
					return
				}
				for pos := 0; pos < CodeLength; pos++ {
					local[pos][idx[code[pos]]]++
				}
			}
			mu.Lock()
			for pos := range local {
				for c := range local[pos] {
					total[pos][c] += local[pos][c]
				}
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("NewCode: %v", err)
	}
	return total
}

func TestNewCodeChiSquare(t *testing.T) {
	t.Parallel()
	const (
		codes  = 1_000_000
		df     = len(Alphabet) - 1
		minP   = 0.001
		trials = 2
	)
	// Each of the 7 positions fails by chance with probability 0.001, so
	// one sample fails with probability ~0.7%. A genuinely biased generator
	// fails every sample (see TestChiSquareDetectsModuloBias), so a second,
	// independent sample is drawn before failing: chance failure of the
	// test drops to ~0.005%.
	var failed []string
	for trial := 1; trial <= trials; trial++ {
		counts := positionCounts(t, codes)
		failed = failed[:0]
		for pos := range counts {
			var sum int64
			for _, c := range counts[pos] {
				sum += c
			}
			if sum != codes {
				t.Fatalf("position %d counted %d characters, want %d", pos, sum, codes)
			}
			x := chiSquare(counts[pos][:])
			p := chiSquarePValue(x, df)
			t.Logf("sample %d position %d: chi2=%.2f df=%d p=%.4f", trial, pos, x, df, p)
			if !(p > minP) {
				failed = append(failed, "position "+string(rune('0'+pos)))
			}
		}
		if len(failed) == 0 {
			return
		}
	}
	t.Fatalf("character frequencies are not uniform (p <= %v) at %v in %d independent samples", minP, failed, trials)
}

func TestChiSquareDetectsModuloBias(t *testing.T) {
	// The statistic must catch the bias that rejection sampling avoids:
	// b % 62 of every byte favours the first 8 characters by 25%.
	const n = 200_000
	buf := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, buf); err != nil {
		t.Fatal(err)
	}
	var counts [62]int64
	for _, b := range buf {
		counts[int(b)%62]++
	}
	x := chiSquare(counts[:])
	if p := chiSquarePValue(x, 61); p > 1e-12 {
		t.Fatalf("modulo-biased sample got chi2=%.1f p=%g; the test cannot see bias", x, p)
	}
}

func BenchmarkNewCode(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewCode(rand.Reader, CodeLength); err != nil {
			b.Fatal(err)
		}
	}
}

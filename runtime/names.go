package runtime

import (
	"fmt"
	"math/rand/v2"
)

// Names are made like docker's: an adjective and the surname of a
// scientist or engineer, joined by an underscore.
var (
	nameLeft = []string{
		"admiring", "agitated", "amazing", "angry", "awesome", "blissful", "bold", "boring",
		"brave", "busy", "charming", "clever", "compassionate", "competent", "condescending",
		"confident", "cool", "cranky", "crazy", "dazzling", "determined", "distracted",
		"dreamy", "eager", "ecstatic", "elastic", "elated", "elegant", "epic", "exciting",
		"fervent", "festive", "flamboyant", "focused", "friendly", "frosty", "funny", "gallant",
		"gifted", "goofy", "gracious", "great", "happy", "hardcore", "heuristic", "hopeful",
		"hungry", "infallible", "inspiring", "intelligent", "jolly", "jovial", "keen", "kind",
		"laughing", "loving", "lucid", "magical", "modest", "musing", "mystifying", "naughty",
		"nervous", "nice", "nifty", "nostalgic", "objective", "optimistic", "peaceful",
		"pedantic", "pensive", "practical", "priceless", "quirky", "quizzical", "relaxed",
		"reverent", "romantic", "sad", "serene", "sharp", "silly", "sleepy", "stoic",
		"strange", "stupefied", "suspicious", "sweet", "tender", "thirsty", "trusting",
		"unruffled", "upbeat", "vibrant", "vigilant", "vigorous", "wizardly", "wonderful",
		"xenodochial", "youthful", "zealous", "zen",
	}
	nameRight = []string{
		"agnesi", "albattani", "allen", "almeida", "archimedes", "ardinghelli", "babbage",
		"banach", "bardeen", "bartik", "bell", "bhabha", "blackwell", "bohr", "booth",
		"borg", "bose", "brahmagupta", "brattain", "brown", "carson", "cerf", "chandrasekhar",
		"chaplygin", "clarke", "colden", "cori", "cray", "curie", "darwin", "davinci",
		"dijkstra", "dirac", "driscoll", "dubinsky", "einstein", "elion", "engelbart",
		"euclid", "euler", "fermat", "fermi", "feynman", "franklin", "galileo", "gauss",
		"goldberg", "goodall", "hamilton", "hawking", "heisenberg", "hertz", "hodgkin",
		"hopper", "hypatia", "jackson", "jennings", "johnson", "kalam", "kepler", "khorana",
		"knuth", "kowalevski", "lalande", "lamarr", "lamport", "leakey", "leavitt", "lovelace",
		"lumiere", "mayer", "mccarthy", "mcclintock", "meitner", "mendel", "merkle", "minsky",
		"morse", "napier", "newton", "nobel", "noether", "pascal", "pasteur", "payne",
		"perlman", "pike", "poincare", "ptolemy", "raman", "ramanujan", "ritchie", "rosalind",
		"shannon", "shockley", "sinoussi", "stonebraker", "swanson", "tesla", "thompson",
		"torvalds", "turing", "varahamihira", "villani", "wiles", "williams", "wilson",
		"wozniak", "wright", "yalow", "yonath",
	}
)

// GenerateName returns a random docker-style name; with suffix, a digit
// is appended, as docker does after repeated collisions.
func GenerateName(suffix bool) string {
	n := nameLeft[rand.IntN(len(nameLeft))] + "_" + nameRight[rand.IntN(len(nameRight))]
	if n == "boring_wozniak" { // docker's one exception: Steve Wozniak is not boring
		return GenerateName(suffix)
	}
	if suffix {
		n = fmt.Sprintf("%s%d", n, rand.IntN(10))
	}
	return n
}

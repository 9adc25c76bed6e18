// Example workload of the build helper (`wasmedge-image build images/cpp`): the first argument
// picks what to do; every example language answers the same commands.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

static int fail(const std::string &msg) {
    std::cerr << "hello-cpp: " << msg << std::endl;
    return 1;
}

static bool read_file(const std::string &path, std::string &out) {
    std::FILE *f = std::fopen(path.c_str(), "rb");  // <fstream> is not in libc++ for WASI
    if (!f) return false;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
    return true;
}

// The three most frequent words of a text file (ties in alphabetical order).
static int wordfreq(const std::string &path) {
    std::string text;
    if (!read_file(path, text)) return fail("cannot open " + path);
    std::map<std::string, int> counts;
    std::string word;
    for (char c : text + " ") {
        if (std::isalnum(static_cast<unsigned char>(c))) {
            word += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        } else if (!word.empty()) {
            counts[word]++;
            word.clear();
        }
    }
    std::vector<std::pair<std::string, int>> ranked(counts.begin(), counts.end());
    std::stable_sort(ranked.begin(), ranked.end(), [](auto &a, auto &b) { return a.second > b.second; });
    for (size_t i = 0; i < ranked.size() && i < 3; i++)
        std::cout << ranked[i].first << " " << ranked[i].second << "\n";
    return 0;
}

int main(int argc, char **argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::cout << "Hello from C++!" << std::endl;
        return 0;
    }
    const std::string &cmd = args[0];
    if (cmd == "echo") {
        for (size_t i = 1; i < args.size(); i++) std::cout << (i > 1 ? " " : "") << args[i];
        std::cout << "\n";
    } else if (cmd == "env" && args.size() == 2) {
        const char *value = std::getenv(args[1].c_str());
        if (!value) return fail(args[1] + " is not set");
        std::cout << value << "\n";
    } else if (cmd == "stdin") {
        std::string line;
        if (!std::getline(std::cin, line)) return fail("no input");
        std::cout << "got: " << line << "\n";
    } else if (cmd == "cat" && args.size() == 2) {
        std::string text;
        if (!read_file(args[1], text)) return fail("cannot open " + args[1]);
        std::cout << text;
    } else if (cmd == "exit" && args.size() == 2) {
        return std::atoi(args[1].c_str());
    } else if (cmd == "wordfreq" && args.size() == 2) {
        return wordfreq(args[1]);
    } else {
        return fail("usage: [echo WORDS...|env NAME|stdin|cat PATH|exit N|wordfreq PATH]");
    }
    return 0;
}

// Example workload of the build helper (`wasmedge-image build images/go`): the first argument
// picks what to do; every example language answers the same commands.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

type order struct {
	Customer string  `json:"customer"`
	Item     string  `json:"item"`
	Qty      int     `json:"qty"`
	Price    float64 `json:"price"`
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "hello-go:", msg)
	os.Exit(1)
}

// orders prints each customer's order count and total, largest first, then the grand total.
func orders(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		fail(err.Error())
	}
	var list []order
	if err := json.Unmarshal(data, &list); err != nil {
		fail(path + ": " + err.Error())
	}
	type summary struct {
		name   string
		orders int
		total  float64
	}
	byName := map[string]*summary{}
	grand := 0.0
	for _, o := range list {
		s, ok := byName[o.Customer]
		if !ok {
			s = &summary{name: o.Customer}
			byName[o.Customer] = s
		}
		s.orders++
		s.total += float64(o.Qty) * o.Price
		grand += float64(o.Qty) * o.Price
	}
	var all []*summary
	for _, s := range byName {
		all = append(all, s)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].total > all[j].total })
	for _, s := range all {
		fmt.Printf("%s %d %.2f\n", s.name, s.orders, s.total)
	}
	fmt.Printf("total %.2f\n", grand)
}

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		fmt.Println("Hello from Go!")
		return
	}
	switch {
	case args[0] == "echo":
		fmt.Println(strings.Join(args[1:], " "))
	case args[0] == "env" && len(args) == 2:
		value, ok := os.LookupEnv(args[1])
		if !ok {
			fail(args[1] + " is not set")
		}
		fmt.Println(value)
	case args[0] == "stdin":
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			fail("no input")
		}
		fmt.Println("got: " + strings.TrimRight(line, "\r\n"))
	case args[0] == "cat" && len(args) == 2:
		data, err := os.ReadFile(args[1])
		if err != nil {
			fail(err.Error())
		}
		os.Stdout.Write(data)
	case args[0] == "exit" && len(args) == 2:
		code, err := strconv.Atoi(args[1])
		if err != nil {
			fail("exit: bad code")
		}
		os.Exit(code)
	case args[0] == "orders" && len(args) == 2:
		orders(args[1])
	default:
		fail("usage: [echo WORDS...|env NAME|stdin|cat PATH|exit N|orders PATH]")
	}
}
